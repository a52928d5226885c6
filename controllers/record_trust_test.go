package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The record the controller acts on: a lost one rebuilt from the status and the Job (a finished
// task stays finished, a created Job is never created again), a finished verdict beside a
// running Job dropped, anything else as read.
func TestTrustRecord(t *testing.T) {
	now := metav1.NewTime(t0.Add(time.Hour))
	at := func(tm time.Time) *metav1.Time { return ptr.To(metav1.NewTime(tm)) }
	finished := func(p workflowv1alpha1.TaskPhase, reason, msg string, end time.Time) taskRecord {
		return taskRecord{JobCreated: true, StartTime: at(t0), Phase: p, Reason: reason, Message: msg, CompletionTime: at(end)}
	}
	// The measured attack: a finished verdict in 2000 written into the annotation of a running task.
	forged := finished(workflowv1alpha1.TaskPhaseCompleted, "Completed", "", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
	completed := finished(workflowv1alpha1.TaskPhaseCompleted, workflowv1alpha1.ReasonCompleted, "Job t completed", t0.Add(time.Minute))

	running := testutil.MakeJob("t", "ns").Active(1).Ready(1).Obj()
	deleting := testutil.MakeJob("t", "ns").Active(1).Ready(1).Obj()
	deleting.DeletionTimestamp = at(t0)
	endedAt := func(w *testutil.JobWrapper, typ batchv1.JobConditionType, reason, msg string, tm time.Time) *batchv1.Job {
		job := w.Obj()
		job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue,
			Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(tm)})
		return job
	}
	complete := endedAt(testutil.MakeJob("t", "ns").Condition(batchv1.JobSuccessCriteriaMet, "", ""), batchv1.JobComplete, "", "", t0.Add(2*time.Minute))
	failed := endedAt(testutil.MakeJob("t", "ns").Condition(batchv1.JobFailureTarget, "BackoffLimitExceeded", "boom"), batchv1.JobFailed, "BackoffLimitExceeded", "boom", t0.Add(3*time.Minute))

	task := testutil.MakeTask("t", "ns").UID("uid-1")
	processing := task.Clone().Phase(workflowv1alpha1.TaskPhaseProcessing).StartTime(t0).
		Condition(workflowv1alpha1.ConditionReady, metav1.ConditionFalse, workflowv1alpha1.ReasonProcessing)
	completedStatus := task.Clone().Phase(workflowv1alpha1.TaskPhaseCompleted).StartTime(t0).CompletionTime(t0.Add(time.Minute)).
		ConditionAt(workflowv1alpha1.ConditionReady, metav1.ConditionTrue, workflowv1alpha1.ReasonCompleted, "Job t completed", t0.Add(time.Minute))
	jobDeletedStatus := task.Clone().Phase(workflowv1alpha1.TaskPhaseError).StartTime(t0).CompletionTime(t0.Add(time.Minute)).
		ConditionAt(workflowv1alpha1.ConditionFailed, metav1.ConditionTrue, workflowv1alpha1.ReasonJobDeleted, "Job t was deleted", t0.Add(time.Minute))

	cases := map[string]struct {
		task       *testutil.TaskWrapper
		rec        taskRecord
		job        *batchv1.Job
		want       taskRecord
		wantAction string // of the RecordCorrected event; "" for none
	}{
		"running, as read":                 {task: processing, rec: started, job: running, want: started},
		"finished, Job complete, as read":  {task: completedStatus, rec: completed, job: complete, want: completed},
		"finished, Job gone, as read":      {task: jobDeletedStatus, rec: completed, want: completed},
		"verdict beside a failing Job":     {task: processing, rec: forged, job: testutil.MakeJob("t", "ns").Condition(batchv1.JobFailureTarget, "", "").Obj(), want: forged},
		"verdict beside a succeeding Job":  {task: processing, rec: forged, job: testutil.MakeJob("t", "ns").Condition(batchv1.JobSuccessCriteriaMet, "", "").Obj(), want: forged},
		"verdict beside a Job in deletion": {task: processing, rec: forged, job: deleting, want: forged},
		"verdict on a canceled task":       {task: processing.Clone().Cancel(true), rec: forged, job: running, want: forged},

		"forged verdict beside a running Job": {task: processing, rec: forged, job: running, want: started, wantAction: "CorrectRecord"},
		// A forged record is rebuilt as a whole: its start comes from the status, not from it.
		"forged record without a start": {task: processing, rec: taskRecord{Phase: workflowv1alpha1.TaskPhaseError, Reason: "JobFailed", CompletionTime: at(t0)},
			job: running, want: started, wantAction: "CorrectRecord"},
		"forged verdict beside a suspended Job": {task: processing.Clone().Suspend(true), rec: forged,
			job: testutil.MakeJob("t", "ns").Suspend(true).Obj(), want: started, wantAction: "CorrectRecord"},

		"new task":                               {task: task, want: taskRecord{}},
		"new task, Job cached before the record": {task: task, job: testutil.MakeJob("t", "ns").Obj(), want: created},
		"lost, completed task":                   {task: completedStatus, job: complete, want: completed, wantAction: "RestoreRecord"},
		"lost, Job deleted while running: no second Job": {task: jobDeletedStatus,
			want: finished(workflowv1alpha1.TaskPhaseError, workflowv1alpha1.ReasonJobDeleted, "Job t was deleted", t0.Add(time.Minute)), wantAction: "RestoreRecord"},
		"lost, processing task whose Job is gone": {task: processing, want: started, wantAction: "RestoreRecord"},
		"lost, only the conditions say canceled": {task: task.Clone().ConditionAt(workflowv1alpha1.ConditionCanceled, metav1.ConditionTrue, workflowv1alpha1.ReasonCanceled, "canceled", t0),
			want: taskRecord{Phase: workflowv1alpha1.TaskPhaseCanceled, Reason: workflowv1alpha1.ReasonCanceled, Message: "canceled", CompletionTime: &now}, wantAction: "RestoreRecord"},
		"lost with the status, Job complete": {task: task, job: complete,
			want: taskRecord{JobCreated: true, Phase: workflowv1alpha1.TaskPhaseCompleted, Reason: workflowv1alpha1.ReasonCompleted, Message: "Job t completed", CompletionTime: at(t0.Add(2 * time.Minute))}},
		"lost with the status, Job failed": {task: task, job: failed,
			want: taskRecord{JobCreated: true, Phase: workflowv1alpha1.TaskPhaseError, Reason: workflowv1alpha1.ReasonJobFailed, Message: "Job t failed: boom", CompletionTime: at(t0.Add(3 * time.Minute))}},
		"lost, status claims completed beside a running Job": {task: completedStatus, job: running, want: started, wantAction: "CorrectRecord"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ev := trustRecord(tc.task.Obj(), tc.rec, tc.job, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
			var action string
			if ev != nil {
				action = ev.action
				if ev.eventType != corev1.EventTypeWarning || ev.reason != EventRecordCorrected || !strings.Contains(ev.note, workflowv1alpha1.AnnotationRecord) {
					t.Errorf("event %+v: want a Warning %s naming %s", *ev, EventRecordCorrected, workflowv1alpha1.AnnotationRecord)
				}
			}
			if action != tc.wantAction {
				t.Errorf("event action %q, want %q", action, tc.wantAction)
			}
		})
	}
}

// A task whose record was dropped as forged is computed as running, Ready=False, and its TTL
// does not start; a rebuilt record of a finished task keeps its status as it was.
func TestTrustedRecordStatus(t *testing.T) {
	now := t0.Add(time.Hour)
	running := testutil.MakeJob("t", "ns").Active(1).Ready(1).Obj()
	forged := taskRecord{JobCreated: true, StartTime: started.StartTime, Phase: workflowv1alpha1.TaskPhaseCompleted, Reason: "Completed",
		CompletionTime: ptr.To(metav1.NewTime(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)))}
	task := testutil.MakeTask("t", "ns").UID("uid-1").TTLSecondsAfterFinished(0).Obj()
	rec, _ := trustRecord(task, forged, running, metav1.NewTime(now))
	status, _ := compute(task, rec, jobObservation{job: running}, now)
	if status.Phase != workflowv1alpha1.TaskPhaseProcessing || status.CompletionTime != nil {
		t.Errorf("phase %s, completionTime %v: want Processing, none", status.Phase, status.CompletionTime)
	}
	if d := ttlRequeueAfter(task, rec, now); d != 0 {
		t.Errorf("ttl requeue %s for a running task", d)
	}

	done := testutil.MakeTask("t", "ns").UID("uid-1").Obj()
	done.Status, _ = compute(done, started, jobObservation{job: testutil.MakeJob("t", "ns").Condition(batchv1.JobComplete, "", "").Obj()}, t0)
	rebuilt, _ := trustRecord(done, taskRecord{}, nil, metav1.NewTime(now))
	again, _ := compute(done, rebuilt, jobObservation{missing: true}, now)
	if diff := cmp.Diff(done.Status, again); diff != "" {
		t.Errorf("a finished task's status changed after its record was rebuilt (-before +after):\n%s", diff)
	}
}
