package controllers

import (
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestCheckStall(t *testing.T) {
	started := func(w *testutil.TaskWrapper) *testutil.TaskWrapper { return w.StartTime(t0) }
	cases := map[string]struct {
		task        *testutil.TaskWrapper
		now         time.Time
		wantStalled bool
		wantAfter   time.Duration
	}{
		"fresh start": {
			task: started(testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60)), now: t0.Add(10 * time.Second),
			wantAfter: 50 * time.Second,
		},
		"no progress since start": {
			task: started(testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60)), now: t0.Add(60 * time.Second),
			wantStalled: true,
		},
		"newest entry counts": {
			task: started(testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60).
				Progress("upload_count", 1, 9, t0.Add(10*time.Second)).Progress("upload", 1, 9, t0.Add(50*time.Second))),
			now: t0.Add(100 * time.Second), wantAfter: 10 * time.Second,
		},
		"old progress stalls": {
			task: started(testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60).Progress("upload", 1, 9, t0.Add(5*time.Second))),
			now:  t0.Add(65 * time.Second), wantStalled: true,
		},
		"default deadline is ten minutes": {
			task: started(testutil.MakeTask("t", "ns")), now: t0.Add(9 * time.Minute), wantAfter: time.Minute,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := tc.task.Obj()
			got := checkStall(task, &task.Status, nil, tc.now)
			if got.stalled != tc.wantStalled || got.after != tc.wantAfter {
				t.Errorf("checkStall = stalled %t after %s; want stalled %t after %s", got.stalled, got.after, tc.wantStalled, tc.wantAfter)
			}
		})
	}
}

// A resumed task counts from its resume, not from its old progress.
func TestCheckStallCountsFromResume(t *testing.T) {
	task := testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60).Progress("upload", 1, 9, t0).Obj()
	meta.SetStatusCondition(&task.Status.Conditions, metav1.Condition{
		Type: workflowv1alpha1.ConditionSuspended, Status: metav1.ConditionFalse, Reason: "Resumed",
		LastTransitionTime: metav1.NewTime(t0.Add(time.Hour)),
	})
	if got := checkStall(task, &task.Status, nil, t0.Add(time.Hour+30*time.Second)); got.stalled || got.after != 30*time.Second {
		t.Errorf("checkStall after resume = %+v; want not stalled, 30s left", got)
	}
}

// Stalled is set with a message naming the deadline, cleared when progress moves, and the
// requeue lands exactly on the deadline.
func TestStallThroughComputeStatus(t *testing.T) {
	task := testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(120).Obj()
	running := jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}
	var rec taskRecord
	task.Status, rec = compute(task, created, running, t0)
	if d := requeueAfter(task, &task.Status, rec, nil, t0); d != 120*time.Second {
		t.Errorf("requeueAfter at start = %s, want 120s", d)
	}
	if d := requeueAfter(task, &task.Status, rec, nil, t0.Add(119*time.Second)); d != time.Second {
		t.Errorf("requeueAfter 1s before the deadline = %s, want 1s", d)
	}

	task.Status, rec = compute(task, rec, running, t0.Add(120*time.Second))
	stalled := meta.FindStatusCondition(task.Status.Conditions, workflowv1alpha1.ConditionStalled)
	if stalled.Status != metav1.ConditionTrue || stalled.Reason != workflowv1alpha1.ReasonProgressDeadlineExceeded ||
		!strings.Contains(stalled.Message, "2m0s") {
		t.Fatalf("not stalled as expected: %+v", stalled)
	}
	if task.Status.Phase != workflowv1alpha1.TaskPhaseProcessing {
		t.Errorf("a stalled task keeps running: phase %s", task.Status.Phase)
	}
	if c := meta.FindStatusCondition(task.Status.Conditions, workflowv1alpha1.ConditionReconciling); c.Status != metav1.ConditionFalse ||
		c.Reason != workflowv1alpha1.ReasonProgressDeadlineExceeded {
		t.Errorf("Stalled and Reconciling both True (kstatus: InProgress, not Failed): %+v", c)
	}
	if d := requeueAfter(task, &task.Status, rec, nil, t0.Add(121*time.Second)); d != 0 {
		t.Errorf("a stalled task is woken by progress, not polled: requeueAfter = %s", d)
	}

	task.Status.Progress = testutil.MakeTask("t", "ns").Progress("upload", 1, 2, t0.Add(125*time.Second)).Obj().Status.Progress
	task.Status, _ = compute(task, rec, running, t0.Add(126*time.Second))
	if c := meta.FindStatusCondition(task.Status.Conditions, workflowv1alpha1.ConditionStalled); c.Status != metav1.ConditionFalse {
		t.Errorf("progress moved but still stalled: %+v", c)
	}
	if !meta.IsStatusConditionTrue(task.Status.Conditions, workflowv1alpha1.ConditionReconciling) {
		t.Error("progress moved but not Reconciling again")
	}
}

// A finished task is never stalled by its progress deadline.
func TestNoStallOutsideProcessing(t *testing.T) {
	task := testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(1).Obj()
	task.Status, _ = compute(task, started, jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobComplete, "", "").Obj()}, t0.Add(time.Hour))
	if c := meta.FindStatusCondition(task.Status.Conditions, workflowv1alpha1.ConditionStalled); c.Status != metav1.ConditionFalse {
		t.Errorf("completed task stalled: %+v", c)
	}
	if d := stallRequeueAfter(task, &task.Status, nil, t0.Add(time.Hour)); d != 0 {
		t.Errorf("stallRequeueAfter = %s for a finished task", d)
	}
}

// Entries without updateTime (a plain kubectl patch) count from when the controller first saw
// their value; so do entries whose updateTime is too far ahead to believe. A value that does
// not change stalls; one that changes counts again from when it was seen.
func TestStallWithoutUpdateTime(t *testing.T) {
	clock := newProgressClock()
	task := testutil.MakeTask("t", "ns").ProgressDeadlineSeconds(60).UID("uid-1").StartTime(t0).Obj()
	future := ptr.To(metav1.NewMicroTime(t0.AddDate(1, 0, 0)))
	task.Status.Progress = []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 1, Total: 9}, {Type: "indexed", Current: 3, UpdateTime: future}}

	check := func(now time.Time) stallCheck {
		return checkStall(task, &task.Status, clock.observe(task, now), now)
	}
	if got := check(t0.Add(30 * time.Second)); got.stalled || got.after != 60*time.Second {
		t.Errorf("first seen at 30s: %+v, want 60s left", got)
	}
	if got := check(t0.Add(89 * time.Second)); got.stalled || got.after != time.Second {
		t.Errorf("same values at 89s: %+v, want 1s left (counting from 30s, the future updateTime ignored)", got)
	}
	if got := check(t0.Add(90 * time.Second)); !got.stalled {
		t.Errorf("same values at 90s: %+v, want stalled", got)
	}
	task.Status.Progress[0].Current = 2
	if got := check(t0.Add(100 * time.Second)); got.stalled || got.after != 60*time.Second {
		t.Errorf("a new value at 100s: %+v, want 60s left", got)
	}
	// The same name under a new UID is a new task: nothing carried over.
	task.UID = "uid-2"
	if got := check(t0.Add(300 * time.Second)); got.stalled || got.after != 60*time.Second {
		t.Errorf("a new task of the same name: %+v, want 60s left", got)
	}
}
