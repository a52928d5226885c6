package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestPaceSummary(t *testing.T) {
	t0 := testutil.T0
	processing := func(summary string) *workflowv1alpha1.WorkflowTaskStatus {
		return &workflowv1alpha1.WorkflowTaskStatus{Phase: workflowv1alpha1.TaskPhaseProcessing, ProgressSummary: summary}
	}
	completed := processing("6/6")
	completed.Phase = workflowv1alpha1.TaskPhaseCompleted
	for _, tc := range []struct {
		name        string
		old, status *workflowv1alpha1.WorkflowTaskStatus
		last        time.Duration // since the last summary written, before now; < 0: none yet
		wantSummary string
		wantWait    time.Duration
	}{
		{"the first summary of a task is written at once", processing(""), processing("1/6"), -1, "1/6", 0},
		{"a new summary soon after the last waits", processing("1/6"), processing("2/6"), time.Second, "1/6", 4 * time.Second},
		{"once the interval has passed it is written", processing("1/6"), processing("3/6"), SummaryInterval, "3/6", 0},
		{"with another change (the phase) it is written at once", processing("5/6"), completed, time.Second, "6/6", 0},
		{"nothing changed: nothing held", processing("2/6"), processing("2/6"), time.Second, "2/6", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(10 * time.Second)
			got, wait := paceSummary(tc.old, tc.status, now.Add(-tc.last), tc.last >= 0, now)
			if got.ProgressSummary != tc.wantSummary || wait != tc.wantWait {
				t.Errorf("paceSummary = %q, wait %s; want %q, wait %s", got.ProgressSummary, wait, tc.wantSummary, tc.wantWait)
			}
			if got.Phase != tc.status.Phase {
				t.Errorf("the phase was held back too: %s", got.Phase)
			}
		})
	}
}

// The pacer remembers a summary written and forgets a task that is gone.
func TestSummaryPacer(t *testing.T) {
	p := newSummaryPacer()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	now := testutil.T0
	status := func(s string) *workflowv1alpha1.WorkflowTaskStatus {
		return &workflowv1alpha1.WorkflowTaskStatus{ProgressSummary: s}
	}
	var got []string
	for i, s := range []string{"1/9", "2/9", "3/9"} {
		out, _ := p.pace(key, status(map[int]string{0: "", 1: "1/9", 2: "1/9"}[i]), status(s), now.Add(time.Duration(i)*time.Second))
		got = append(got, out.ProgressSummary)
	}
	if diff := cmp.Diff([]string{"1/9", "1/9", "1/9"}, got); diff != "" {
		t.Errorf("summaries written (-want +got):\n%s", diff)
	}
	p.forget(key)
	if out, wait := p.pace(key, status("1/9"), status("4/9"), now.Add(3*time.Second)); out.ProgressSummary != "4/9" || wait != 0 {
		t.Errorf("after forget: %q, wait %s; want the new summary at once", out.ProgressSummary, wait)
	}
}

func TestSooner(t *testing.T) {
	for _, tc := range []struct{ a, b, want time.Duration }{
		{0, 0, 0}, {0, time.Second, time.Second}, {time.Second, 0, time.Second}, {2 * time.Second, time.Second, time.Second}, {time.Second, 2 * time.Second, time.Second},
	} {
		if got := sooner(tc.a, tc.b); got != tc.want {
			t.Errorf("sooner(%s, %s) = %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
}
