package controllers

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// What a hostile pod writes into its task's status, one field (group) at a time, on a task the
// controller saw start at t0 and whose Job is still running. The controller computes the status
// from its record and the Job, so each forgery is undone and named.
func TestForgedStatusIsCorrected(t *testing.T) {
	running := jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}
	task := testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(0).Obj()
	task.UID, task.Generation = "uid-1", 1
	var rec taskRecord
	task.Status, rec = compute(task, started, running, t0)
	truth := task.Status.DeepCopy()

	longAgo := ptr.To(metav1.NewTime(t0.AddDate(-26, 0, 0)))
	cases := map[string]struct {
		forge      func(*workflowv1alpha1.WorkflowTaskStatus)
		wantFields []string
	}{
		"the attack: finished, long ago, Ready": {
			forge: func(s *workflowv1alpha1.WorkflowTaskStatus) {
				s.Phase, s.CompletionTime = workflowv1alpha1.TaskPhaseCompleted, longAgo
				meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: "Ready", Status: "True", Reason: "Forged", Message: "x"})
			},
			wantFields: []string{"status.phase", "status.completionTime", "status.conditions"},
		},
		"phase Error":    {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.Phase = workflowv1alpha1.TaskPhaseError }, wantFields: []string{"status.phase"}},
		"phase Canceled": {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.Phase = workflowv1alpha1.TaskPhaseCanceled }, wantFields: []string{"status.phase"}},
		"startTime in future": {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) {
			s.StartTime = ptr.To(metav1.NewTime(t0.AddDate(5, 0, 0)))
		}, wantFields: []string{"status.startTime"}},
		"startTime removed":    {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.StartTime = nil }},
		"completionTime alone": {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.CompletionTime = longAgo }, wantFields: []string{"status.completionTime"}},
		"id":                   {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.ID = "AAAAAAAAAA" }, wantFields: []string{"status.id"}},
		"observedGeneration":   {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.ObservedGeneration = 99 }, wantFields: []string{"status.observedGeneration"}},
		"unknown condition": {
			forge: func(s *workflowv1alpha1.WorkflowTaskStatus) {
				meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: "Approved", Status: "True", Reason: "Forged", Message: "x"})
			},
			wantFields: []string{"status.conditions"},
		},
		"Failed on a running task": {
			forge: func(s *workflowv1alpha1.WorkflowTaskStatus) {
				meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: "Failed", Status: "True", Reason: "Forged", Message: "x"})
			},
			wantFields: []string{"status.conditions"},
		},
		"progressSummary": {forge: func(s *workflowv1alpha1.WorkflowTaskStatus) { s.ProgressSummary = "100%" }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			forged := task.DeepCopy()
			tc.forge(&forged.Status)
			got, gotRec := compute(forged, rec, running, t0.Add(time.Second))
			// (A condition flipped back gets the time of the flip.)
			if diff := cmp.Diff(*truth, got, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("status not restored (-truth +got):\n%s", diff)
			}
			if !recordEqual(rec, gotRec) {
				t.Errorf("record moved: %+v -> %+v", rec, gotRec)
			}
			if _, ok := ttlExpiry(forged, gotRec); ok {
				t.Errorf("a forged finish started the TTL")
			}
			if diff := cmp.Diff(tc.wantFields, forgedFields(&forged.Status, &got), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("forged fields (-want +got):\n%s", diff)
			}
		})
	}
}

// Transitions the controller makes itself are never called forged.
func TestOwnTransitionsAreNotForged(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Obj()
	task.UID = "uid-1"
	steps := []jobObservation{
		{job: testutil.MakeJob("t", "").Obj(), created: true},
		{job: testutil.MakeJob("t", "").Active(1).Ready(0).Obj()},
		{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()},
		{job: testutil.MakeJob("t", "").Suspend(true).Obj()},
		{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()},
		{job: testutil.MakeJob("t", "").Condition(batchv1.JobSuccessCriteriaMet, "", "").Obj()},
		{missing: true},
	}
	var rec taskRecord
	now := t0
	for i, obs := range steps {
		now = now.Add(time.Minute)
		old := task.Status.DeepCopy()
		task.Status, rec = compute(task, rec, obs, now)
		if f := forgedFields(old, &task.Status); len(f) > 0 {
			t.Errorf("step %d (%s → %s): own transition reported as forged: %v", i, old.Phase, task.Status.Phase, f)
		}
	}
	if task.Status.Phase != workflowv1alpha1.TaskPhaseCompleted {
		t.Errorf("final phase %s", task.Status.Phase)
	}
}

// A failed step shows on an unfinished task: a runner conflict as Stalled (never together
// with Reconciling=True), anything else as Reconciling; the error's text is in the message.
func TestComputeStatusOnError(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Obj()
	conflict := &runnerConflictError{kind: "ServiceAccount", namespace: "ns", name: "t-runner"}
	cases := map[string]struct {
		err       error
		rec       taskRecord
		obs       jobObservation
		wantPhase workflowv1alpha1.TaskPhase
		wantConds []condSummary
	}{
		"runner conflict before the job": {
			err: conflict, wantPhase: workflowv1alpha1.TaskPhaseQueued,
			wantConds: []condSummary{{"Ready", "False", "Queued"}, {"Reconciling", "False", "RunnerConflict"}, {"Stalled", "True", "RunnerConflict"}},
		},
		"runner conflict while running": {
			err: errors.Join(conflict), rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Active(1).Ready(1).Obj()}, wantPhase: workflowv1alpha1.TaskPhaseProcessing,
			wantConds: []condSummary{{"Ready", "False", "Processing"}, {"Reconciling", "False", "RunnerConflict"}, {"Stalled", "True", "RunnerConflict"}},
		},
		"api error, job unreadable, started": {
			err: errors.New("getting Job ns/t: connection refused"), rec: started, wantPhase: workflowv1alpha1.TaskPhaseProcessing,
			wantConds: []condSummary{{"Ready", "False", "Processing"}, {"Reconciling", "True", "ReconcileError"}, {"Stalled", "False", "ReconcileError"}},
		},
		"finished task: the verdict stands": {
			err: errors.New("deleting runner RoleBinding: boom"), rec: taskRecord{JobCreated: true, Phase: workflowv1alpha1.TaskPhaseCompleted, Reason: "Completed", Message: "done", CompletionTime: ptr.To(metav1.NewTime(t0))},
			wantPhase: workflowv1alpha1.TaskPhaseCompleted,
			wantConds: []condSummary{{"Ready", "True", "Completed"}, {"Reconciling", "False", "Completed"}, {"Stalled", "False", "Completed"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, _ := computeStatus(task, statusInputs{record: tc.rec, obs: tc.obs, err: tc.err, now: t0})
			if got.Phase != tc.wantPhase {
				t.Errorf("phase = %s, want %s", got.Phase, tc.wantPhase)
			}
			if diff := cmp.Diff(tc.wantConds, summarize(got.Conditions)); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if c := meta.FindStatusCondition(got.Conditions, "Stalled"); c.Reason == "RunnerConflict" && c.Message != conflict.Error() {
				t.Errorf("message does not name the object: %q", c.Message)
			}
		})
	}
}
