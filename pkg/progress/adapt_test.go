package progress

import (
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

func TestAdapt(t *testing.T) {
	const base, maxI = time.Second, 30 * time.Second
	throttled := apierrors.NewTooManyRequests("the priority level is full", 1)
	other := errors.New("connection refused")
	fast := 10 * time.Millisecond
	for _, tc := range []struct {
		name string
		cur  time.Duration
		err  error
		took time.Duration
		want time.Duration
	}{
		{"a fast write at the base interval stays there", base, nil, fast, base},
		{"a 429 doubles it", base, throttled, fast, 2 * base},
		{"a 429 wrapped in the reporter's error doubles it too", 4 * base, errors.Join(errors.New("progress: writing"), throttled), fast, 8 * base},
		{"a write slower than the interval doubles it", base, nil, 1500 * time.Millisecond, 2 * base},
		{"no further than the maximum", 20 * time.Second, throttled, fast, maxI},
		{"another failure leaves it (backoff handles failures)", 4 * base, other, fast, 4 * base},
		{"a write that went well brings it halfway back", 9 * base, nil, fast, 5 * base},
		{"within an eighth of the base: the base", base + 200*time.Millisecond, nil, fast, base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := adapt(tc.cur, base, maxI, tc.err, tc.took); got != tc.want {
				t.Errorf("adapt(%s, %v, took %s) = %s, want %s", tc.cur, tc.err, tc.took, got, tc.want)
			}
		})
	}
	// A short interval is not stretched by ordinary writes that take longer than it.
	if got := adapt(20*time.Millisecond, 20*time.Millisecond, maxI, nil, 100*time.Millisecond); got != 20*time.Millisecond {
		t.Errorf("a 100 ms write at a 20 ms interval stretched it to %s; only writes over %s count as slow", got, SlowWrite)
	}
}

func TestRetryWait(t *testing.T) {
	gr := schema.GroupResource{Group: workflowv1alpha1.GroupVersion.Group, Resource: "workflowtasks"}
	for _, tc := range []struct {
		name    string
		err     error
		backoff time.Duration
		want    time.Duration
	}{
		{"Retry-After longer than the backoff", apierrors.NewTooManyRequests("full", 5), time.Second, 5 * time.Second},
		{"the backoff longer than Retry-After", apierrors.NewTooManyRequests("full", 1), 4 * time.Second, 4 * time.Second},
		{"a server timeout's suggested delay", apierrors.NewServerTimeout(gr, "patch", 3), time.Second, 3 * time.Second},
		{"no suggestion", errors.New("connection refused"), 2 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryWait(tc.err, tc.backoff); got != tc.want {
				t.Errorf("retryWait = %s, want %s", got, tc.want)
			}
		})
	}
}
