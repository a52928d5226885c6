package progress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// unreachable is a config for an address where nothing listens: writes fail fast, which is all
// these tests of the in-memory side need.
func unreachable() *rest.Config { return &rest.Config{Host: "https://127.0.0.1:1"} }

func newTestReporter(t testing.TB, interval time.Duration) *Reporter {
	t.Helper()
	r, err := New(Options{Config: unreachable(), Namespace: "ns", Task: "t", FieldManager: "test", Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func TestValidType(t *testing.T) {
	for typ, want := range map[string]bool{
		"upload": true, "upload_single_0": true, "upload_count": true, "archive_size": true,
		"": false, "Upload": false, "upload-count": false, "_upload": false, "upload_": false,
		"upload__count": false, "0upload": false, "upload count": false,
		"a23456789012345678901234567890123456789012345678901234567890123":  true,
		"a234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		if got := ValidType(typ); got != want {
			t.Errorf("ValidType(%q) = %t, want %t", typ, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for failures, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 50: 30 * time.Second} {
		for range 100 {
			got := backoff(time.Second, 30*time.Second, failures)
			if lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2); got < lo || got > hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", failures, got, lo, hi)
			}
		}
	}
}

func TestEntryArithmetic(t *testing.T) {
	r := newTestReporter(t, time.Hour)
	e, err := r.Entry("upload")
	if err != nil {
		t.Fatal(err)
	}
	e.Set(10, 100)
	e.Add(5)
	e.Add(-100)
	if got := e.current.Load(); got != 0 {
		t.Errorf("current below zero: %d", got)
	}
	e.Set(-1, -1)
	e.SetCurrent(7)
	e.SetTotal(9)
	e.SetIdentifier(string(make([]byte, 2000)))
	if c, tot, id := e.current.Load(), e.total.Load(), *e.identifier.Load(); c != 7 || tot != 9 || len(id) != MaxIdentifierLength {
		t.Errorf("entry = %d/%d id %d bytes", c, tot, len(id))
	}
	if again, _ := r.Entry("upload"); again != e {
		t.Error("Entry returned a second entry for the same type")
	}
}

func TestRefusedUpdatesAreCountedNotFatal(t *testing.T) {
	r := newTestReporter(t, time.Hour)
	r.Set("Not-Valid", 1, 2)
	for i := range MaxEntries + 5 {
		r.Set(fmt.Sprintf("upload_single_%d", i), 1, 2)
	}
	if got := r.Dropped(); got != 6 {
		t.Errorf("Dropped = %d, want 6 (1 invalid type + 5 over the limit)", got)
	}
	if _, err := r.Entry("Not-Valid"); err == nil {
		t.Error("Entry accepted an invalid type")
	}
}

// The apply body carries exactly the writer's entries; an unchanged entry keeps its update
// time, a changed one gets the new time, a deleted one is left out.
func TestBody(t *testing.T) {
	r := newTestReporter(t, time.Hour)
	r.Set("upload", 1, 10)
	r.Set("upload_count", 1, 3)
	r.SetIdentifier("upload_single_0", "/dst/a.bin")
	t1 := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	first := decode(t, r, t1)
	r.Set("upload", 2, 10)
	r.Delete("upload_count")
	t2 := t1.Add(time.Second)
	second := decode(t, r, t2)

	want := []map[string]any{
		{"type": "upload", "current": 2.0, "total": 10.0, "updateTime": "2026-11-29T06:00:01.000000Z"},
		{"type": "upload_single_0", "current": 0.0, "total": 0.0, "identifier": "/dst/a.bin", "updateTime": "2026-11-29T06:00:00.000000Z"},
	}
	if diff := cmp.Diff(want, second); diff != "" {
		t.Errorf("second body (-want +got):\n%s", diff)
	}
	if len(first) != 3 {
		t.Errorf("first body has %d entries, want 3", len(first))
	}
}

// Every apply body names the task object it is meant for: its UID (from Options.UID, or
// pinned by the first read) and the resourceVersion read just before, which the API server
// checks (it ignores metadata.uid in a patch of the status subresource).
func TestBodyMetadata(t *testing.T) {
	for name, tc := range map[string]struct {
		uid             types.UID
		resourceVersion string
		want            map[string]string
	}{
		"uid and resourceVersion": {uid: "3f1c-old", resourceVersion: "42",
			want: map[string]string{"name": "t", "namespace": "ns", "uid": "3f1c-old", "resourceVersion": "42"}},
		"uid only": {uid: "3f1c-old",
			want: map[string]string{"name": "t", "namespace": "ns", "uid": "3f1c-old"}},
		"no uid pinned yet": {resourceVersion: "7",
			want: map[string]string{"name": "t", "namespace": "ns", "resourceVersion": "7"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := newTestReporter(t, time.Hour)
			r.Set("upload", 1, 2)
			b, err := ApplyBody("ns", "t", tc.uid, tc.resourceVersion, r.writer.list(*r.entries.Load(), time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			var obj struct{ Metadata map[string]string }
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, obj.Metadata); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
		})
	}
}

// Options.UID is the writer's UID from the start; NewFromEnvironment takes $WORKFLOWTASK_UID.
func TestUIDFromOptionsAndEnvironment(t *testing.T) {
	r, err := New(Options{Config: unreachable(), Namespace: "ns", Task: "t", UID: "u-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(expired())
	if uid := r.writer.sink.(*directSink).uid; uid != "u-1" {
		t.Errorf("writer UID = %q, want u-1", uid)
	}
	t.Setenv(workflowv1alpha1.EnvTaskUID, "u-env")
	t.Setenv(workflowv1alpha1.EnvTaskName, "t")
	t.Setenv(workflowv1alpha1.EnvTaskNamespace, "ns")
	for opt, want := range map[types.UID]types.UID{"": "u-env", "u-opt": "u-opt"} {
		r, err := NewFromEnvironment(Options{Config: unreachable(), UID: opt})
		if err != nil {
			t.Fatal(err)
		}
		if uid := r.writer.sink.(*directSink).uid; uid != want {
			t.Errorf("NewFromEnvironment(UID %q): writer UID = %q, want %q", opt, uid, want)
		}
		_ = r.Close(expired())
	}
}

// NewFromEnvironment takes the interval from $WORKFLOWTASK_PROGRESS_INTERVAL (the operator's
// --progress-interval) unless Options.Interval is set; a bad value is an error naming it.
func TestIntervalFromEnvironment(t *testing.T) {
	t.Setenv(workflowv1alpha1.EnvTaskName, "t")
	t.Setenv(workflowv1alpha1.EnvTaskNamespace, "ns")
	for _, tc := range []struct {
		env     string
		opt     time.Duration
		want    time.Duration
		wantErr bool
	}{
		{env: "", want: DefaultInterval},
		{env: "1m", want: time.Minute},
		{env: "1m", opt: 5 * time.Second, want: 5 * time.Second},
		{env: "soon", wantErr: true},
		{env: "-1s", wantErr: true},
		{env: "0s", wantErr: true},
	} {
		t.Setenv(workflowv1alpha1.EnvProgressInterval, tc.env)
		r, err := NewFromEnvironment(Options{Config: unreachable(), Interval: tc.opt})
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), workflowv1alpha1.EnvProgressInterval) {
				t.Errorf("%s=%q: err = %v, want one naming the variable", workflowv1alpha1.EnvProgressInterval, tc.env, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Stats().Interval; got != tc.want {
			t.Errorf("%s=%q, Options.Interval %s: interval %s, want %s", workflowv1alpha1.EnvProgressInterval, tc.env, tc.opt, got, tc.want)
		}
		_ = r.Close(expired())
	}
}

// Once the task was replaced, nothing more is sent: updates still return at once, Flush and
// Close return the error (matching ErrTaskReplaced) without touching the network.
func TestReplacedIsPermanent(t *testing.T) {
	r := newTestReporter(t, time.Millisecond)
	replaced := fmt.Errorf("progress: task ns/t: %w (test)", ErrTaskReplaced)
	r.replaced.Store(&replaced)
	r.lastErr.Store(&replaced)
	for i := range 100_000 {
		r.Set("upload", int64(i), 100_000)
		r.Add("upload_count", 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for range 3 {
		if err := r.Flush(ctx); !errors.Is(err, ErrTaskReplaced) {
			t.Fatalf("Flush = %v, want ErrTaskReplaced", err)
		}
	}
	if err := r.Close(ctx); !errors.Is(err, ErrTaskReplaced) || ctx.Err() != nil {
		t.Errorf("Close = %v (ctx %v), want ErrTaskReplaced at once", err, ctx.Err())
	}
	if err := r.Close(ctx); !errors.Is(err, ErrTaskReplaced) {
		t.Errorf("second Close = %v, want ErrTaskReplaced", err)
	}
}

func expired() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	cancel()
	return ctx
}

func decode(t *testing.T, r *Reporter, now time.Time) []map[string]any {
	t.Helper()
	b, err := ApplyBody("ns", "t", "", "", r.writer.list(*r.entries.Load(), now))
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		APIVersion, Kind string
		Metadata         map[string]string
		Status           struct{ Progress []map[string]any }
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	if obj.APIVersion != "workflow.taskops.dev/v1alpha1" || obj.Kind != "WorkflowTask" || obj.Metadata["name"] != "t" || obj.Metadata["namespace"] != "ns" {
		t.Errorf("body header = %+v", obj)
	}
	return obj.Status.Progress
}

// With the API server unreachable, a million updates from 32 goroutines all return: nothing
// on the caller's side waits for the network.
func TestUpdatesNeverWaitForTheNetwork(t *testing.T) {
	r := newTestReporter(t, time.Millisecond)
	e, _ := r.Entry("upload")
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			typ := fmt.Sprintf("upload_single_%d", g)
			for i := range 1_000_000 / 32 {
				r.Set(typ, int64(i), 1_000_000)
				e.Add(1)
			}
		})
	}
	wg.Wait()
	if got := e.current.Load(); got != 1_000_000/32*32 {
		t.Errorf("Add lost updates: %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); err == nil {
		t.Error("Close claimed the final state was written to an unreachable server")
	}
	r.Set("upload", 1, 1) // after Close: ignored, no panic
}
