package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var t0 = testutil.T0

type condSummary struct {
	Type, Status, Reason string
}

func summarize(conds []metav1.Condition) []condSummary {
	out := make([]condSummary, 0, len(conds))
	for _, c := range conds {
		out = append(out, condSummary{c.Type, string(c.Status), c.Reason})
	}
	return out
}

// compute runs computeStatus as a reconcile at now would, with no failed step.
func compute(task *workflowv1alpha1.WorkflowTask, rec taskRecord, obs jobObservation, now time.Time) (workflowv1alpha1.WorkflowTaskStatus, taskRecord) {
	return computeStatus(task, statusInputs{record: rec, obs: obs, now: now})
}

// Records of a task whose Job was created, and of one the controller saw start at t0.
var (
	created = taskRecord{JobCreated: true}
	started = taskRecord{JobCreated: true, StartTime: ptr.To(metav1.NewTime(t0))}
)

func TestComputeStatusPhases(t *testing.T) {
	base := testutil.MakeTask("t", "ns").UID("uid-1")
	processing := base.Clone().Phase(workflowv1alpha1.TaskPhaseProcessing)

	cases := map[string]struct {
		task       *testutil.TaskWrapper
		rec        taskRecord
		obs        jobObservation
		wantPhase  workflowv1alpha1.TaskPhase
		wantConds  []condSummary
		wantStart  bool
		wantFinish bool
	}{
		"job just created, no pod yet": {
			task: base, obs: jobObservation{job: testutil.MakeJob("t", "").Obj(), created: true},
			wantPhase: workflowv1alpha1.TaskPhaseQueued,
			wantConds: []condSummary{{"Ready", "False", "Queued"}, {"Reconciling", "True", "Queued"}, {"Stalled", "False", "Queued"}},
		},
		"pod pending is still queued": {
			task: base.Clone().Phase(workflowv1alpha1.TaskPhaseQueued), rec: created, obs: jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(0).Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseQueued,
			wantConds: []condSummary{{"Ready", "False", "Queued"}, {"Reconciling", "True", "Queued"}, {"Stalled", "False", "Queued"}},
		},
		"pod running": {
			task: base.Clone().Phase(workflowv1alpha1.TaskPhaseQueued), rec: created, obs: jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseProcessing, wantStart: true,
			wantConds: []condSummary{{"Ready", "False", "Processing"}, {"Reconciling", "True", "Processing"}, {"Stalled", "False", "Progressing"}},
		},
		"between pod retries a started task stays processing": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Active(0).Ready(0).Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseProcessing, wantStart: true,
			wantConds: []condSummary{{"Ready", "False", "Processing"}, {"Reconciling", "True", "Processing"}, {"Stalled", "False", "Progressing"}},
		},
		"success criteria met is completed": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobSuccessCriteriaMet, "CompletionsReached", "").Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseCompleted, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "True", "Completed"}, {"Reconciling", "False", "Completed"}, {"Stalled", "False", "Completed"}},
		},
		"complete is completed": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobSuccessCriteriaMet, "", "").Condition(batchv1.JobComplete, "", "").Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseCompleted, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "True", "Completed"}, {"Reconciling", "False", "Completed"}, {"Stalled", "False", "Completed"}},
		},
		"failure target is error": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobFailureTarget, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit").Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseError, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", "JobFailed"}, {"Reconciling", "False", "JobFailed"}, {"Stalled", "True", "JobFailed"}, {"Failed", "True", "JobFailed"}},
		},
		"deadline exceeded is error": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobFailureTarget, batchv1.JobReasonDeadlineExceeded, "").Condition(batchv1.JobFailed, batchv1.JobReasonDeadlineExceeded, "").Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseError, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", "DeadlineExceeded"}, {"Reconciling", "False", "DeadlineExceeded"}, {"Stalled", "True", "DeadlineExceeded"}, {"Failed", "True", "DeadlineExceeded"}},
		},
		"task suspended": {
			task: base.Clone().Suspend(true).Phase(workflowv1alpha1.TaskPhaseQueued), rec: created, obs: jobObservation{job: testutil.MakeJob("t", "").Suspend(true).Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseSuspending,
			wantConds: []condSummary{{"Reconciling", "False", "Suspended"}, {"Stalled", "False", "Suspended"}, {"Suspended", "True", "Suspended"}},
		},
		"job suspended by someone else": {
			task: processing, rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Suspend(true).Obj()},
			wantPhase: workflowv1alpha1.TaskPhaseSuspending, wantStart: true,
			wantConds: []condSummary{{"Reconciling", "False", "Suspended"}, {"Stalled", "False", "Suspended"}, {"Suspended", "True", "Suspended"}},
		},
		"canceled": {
			task: processing.Clone().Cancel(true), rec: started, obs: jobObservation{},
			wantPhase: workflowv1alpha1.TaskPhaseCanceled, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", "Canceled"}, {"Reconciling", "False", "Canceled"}, {"Stalled", "True", "Canceled"}, {"Canceled", "True", "Canceled"}},
		},
		"job deleted while running": {
			task: processing, rec: started, obs: jobObservation{missing: true},
			wantPhase: workflowv1alpha1.TaskPhaseError, wantStart: true, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", "JobDeleted"}, {"Reconciling", "False", "JobDeleted"}, {"Stalled", "True", "JobDeleted"}, {"Failed", "True", "JobDeleted"}},
		},
		"job refused by the API server": {
			task: base, obs: jobObservation{invalid: "spec.template.spec.containers[0].name: Required value"},
			wantPhase: workflowv1alpha1.TaskPhaseError, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", ReasonJobInvalid}, {"Reconciling", "False", ReasonJobInvalid}, {"Stalled", "True", ReasonJobInvalid}, {"Failed", "True", ReasonJobInvalid}},
		},
		"a foreign job holds the name": {
			task: base, obs: jobObservation{conflict: "a Job named \"t\" exists and does not belong to this task"},
			wantPhase: workflowv1alpha1.TaskPhaseError, wantFinish: true,
			wantConds: []condSummary{{"Ready", "False", ReasonJobConflict}, {"Reconciling", "False", ReasonJobConflict}, {"Stalled", "True", ReasonJobConflict}, {"Failed", "True", ReasonJobConflict}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := tc.task.Obj()
			got, rec := compute(task, tc.rec, tc.obs, t0.Add(time.Minute))
			if got.Phase != tc.wantPhase {
				t.Errorf("phase = %s, want %s", got.Phase, tc.wantPhase)
			}
			if diff := cmp.Diff(tc.wantConds, summarize(got.Conditions)); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if (got.StartTime != nil) != tc.wantStart {
				t.Errorf("startTime = %v, want set=%t", got.StartTime, tc.wantStart)
			}
			if (got.CompletionTime != nil) != tc.wantFinish {
				t.Errorf("completionTime = %v, want set=%t", got.CompletionTime, tc.wantFinish)
			}
			if rec.finished() != tc.wantFinish || (tc.wantFinish && (rec.Phase != got.Phase || !rec.CompletionTime.Equal(got.CompletionTime))) {
				t.Errorf("record %+v does not hold the verdict %s at %v", rec, got.Phase, got.CompletionTime)
			}
			if !rec.StartTime.Equal(got.StartTime) {
				t.Errorf("record start %v, status start %v", rec.StartTime, got.StartTime)
			}
			if got.ID != workflowv1alpha1.TaskIDFromUID("uid-1") || got.ObservedGeneration != task.Generation {
				t.Errorf("id/observedGeneration = %q/%d", got.ID, got.ObservedGeneration)
			}
			for _, c := range got.Conditions {
				if c.Message == "" || c.ObservedGeneration != task.Generation {
					t.Errorf("condition %s lacks a message or observedGeneration: %+v", c.Type, c)
				}
			}
		})
	}
}

// A finished task is terminal: whatever the Job does later (or if it vanishes), nothing moves.
func TestComputeStatusFinishedIsTerminal(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Obj()
	var rec taskRecord
	task.Status, rec = compute(task, started, jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobComplete, "", "").Obj()}, t0)
	for name, obs := range map[string]jobObservation{
		"job gone":    {missing: true},
		"job failed":  {job: testutil.MakeJob("t", "").Condition(batchv1.JobFailed, "", "").Obj()},
		"pods active": {job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()},
		"nothing":     {},
	} {
		t.Run(name, func(t *testing.T) {
			again := task.DeepCopy()
			again.Spec.Cancel = ptr.To(true)
			got, gotRec := compute(again, rec, obs, t0.Add(time.Hour))
			if diff := cmp.Diff(task.Status, got); diff != "" {
				t.Errorf("finished task changed (-want +got):\n%s", diff)
			}
			if !recordEqual(rec, gotRec) {
				t.Errorf("record changed: %+v -> %+v", rec, gotRec)
			}
		})
	}
}

// Recomputing an unchanged task gives the identical status: the basis of "write only when
// changed" and of idempotent re-applies.
func TestComputeStatusIsStable(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Progress("upload", 5, 10, t0).Obj()
	obs := jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}
	var rec taskRecord
	task.Status, rec = compute(task, created, obs, t0)
	again, againRec := compute(task, rec, obs, t0.Add(30*time.Second))
	if diff := cmp.Diff(task.Status, again); diff != "" {
		t.Errorf("status not stable (-first +second):\n%s", diff)
	}
	if !recordEqual(rec, againRec) {
		t.Errorf("record not stable: %+v -> %+v", rec, againRec)
	}
	if task.Status.ProgressSummary != "50%" {
		t.Errorf("progressSummary = %q, want 50%%", task.Status.ProgressSummary)
	}
}

func TestComputeStatusSuspendResume(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Suspend(true).Obj()
	suspendedJob := testutil.MakeJob("t", "").Suspend(true).Obj()
	var rec taskRecord
	task.Status, rec = compute(task, created, jobObservation{job: suspendedJob}, t0)
	task.Spec.Suspend = ptr.To(false)
	got, _ := compute(task, rec, jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}, t0.Add(time.Minute))
	want := []condSummary{{"Ready", "False", "Processing"}, {"Reconciling", "True", "Processing"}, {"Stalled", "False", "Progressing"}, {"Suspended", "False", "Resumed"}}
	if diff := cmp.Diff(want, summarize(got.Conditions)); diff != "" {
		t.Errorf("conditions after resume (-want +got):\n%s", diff)
	}
}

func TestStatusEvents(t *testing.T) {
	queued := testutil.MakeTask("t", "ns").Obj()
	queued.Status, _ = compute(queued, taskRecord{}, jobObservation{job: testutil.MakeJob("t", "").Obj()}, t0)
	running, runningRec := compute(queued, created, jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}, t0)
	runningTask := queued.DeepCopy()
	runningTask.Status = running
	stalled, _ := compute(runningTask, runningRec, jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}, t0.Add(time.Hour))
	done, _ := compute(runningTask, runningRec, jobObservation{job: testutil.MakeJob("t", "").Condition(batchv1.JobComplete, "", "").Obj()}, t0)
	forged := running.DeepCopy()
	forged.Phase, forged.CompletionTime = workflowv1alpha1.TaskPhaseCompleted, ptr.To(metav1.NewTime(t0.AddDate(-26, 0, 0)))

	reasons := func(es []event) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.reason)
		}
		return out
	}
	cases := map[string]struct {
		old, new *workflowv1alpha1.WorkflowTaskStatus
		obs      jobObservation
		want     []string
	}{
		"created": {&workflowv1alpha1.WorkflowTaskStatus{}, &queued.Status, jobObservation{job: testutil.MakeJob("t", "").Obj(), created: true}, []string{EventJobCreated}},
		// Phase changes, stalls and milestones are announcements (TestAnnounce), not made here.
		"started":                 {&queued.Status, &running, jobObservation{}, nil},
		"stalled":                 {&running, &stalled, jobObservation{}, nil},
		"completed":               {&running, &done, jobObservation{}, nil},
		"no change":               {&running, &running, jobObservation{}, nil},
		"forged finish corrected": {forged, &running, jobObservation{}, []string{EventStatusCorrected}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, reasons(statusEvents(tc.old, tc.new, tc.obs)), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}
