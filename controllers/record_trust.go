package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Notes of the RecordCorrected event.
const (
	msgRecordForged = "The annotation %s claims the task finished (phase %s) while its Job %s is still running; " +
		"the operator reached no such verdict and does not act on it: the task runs on, cancel and suspend apply, " +
		"and ttlSecondsAfterFinished counts only once the task really finishes"
	msgRecordRestored = "The annotation %s was missing or unreadable although the task's status shows phase %s; " +
		"the operator rebuilt it from the task's status and Job: %s"
)

// trustRecord is the record the controller acts on: the one read from the annotation, rebuilt
// (recoverRecord) when it was lost or claims a finished verdict that the task's running Job
// contradicts (forgedVerdict), never with such a verdict. The event, when not nil, says what was corrected, naming the
// annotation. job is the task's own Job as cached, nil when there is none. Pure: no client, no
// clock of its own.
//
// The record is metadata: where the record admission policy (config/admission) is not
// installed, anyone who may update the task can write it. These checks keep such an edit from
// deleting a running task through its TTL, from hiding a running Job behind a finished status,
// and from running a finished task's Job again.
func trustRecord(task *workflowv1alpha1.WorkflowTask, rec taskRecord, job *batchv1.Job, now metav1.Time) (taskRecord, *event) {
	claimed := rec.Phase
	lost, forged := rec.empty(), forgedVerdict(task, rec, job)
	if lost || forged {
		// A record with a forged verdict is suspect as a whole (its start, its jobCreated):
		// rebuilt like a lost one.
		rec = recoverRecord(task, job, now)
		if lost {
			claimed = rec.Phase
		}
	}
	if forgedVerdict(task, rec, job) { // the status's verdict, beside a running Job
		forged = true
		rec.Phase, rec.Reason, rec.Message, rec.CompletionTime = "", "", "", nil
	}
	switch {
	case forged:
		return rec, &event{corev1.EventTypeWarning, EventRecordCorrected, "CorrectRecord",
			fmt.Sprintf(msgRecordForged, workflowv1alpha1.AnnotationRecord, claimed, job.Name)}
	// The controller writes the record before the status computed from it, so a status past
	// Queued without a record means the record was removed: worth a word. A Job without a
	// record is no such sign (the cached task may not show the record written with it yet).
	case lost && statusPastQueued(task):
		return rec, &event{corev1.EventTypeWarning, EventRecordCorrected, "RestoreRecord",
			fmt.Sprintf(msgRecordRestored, workflowv1alpha1.AnnotationRecord, task.Status.Phase, describeRecord(rec))}
	}
	return rec, nil
}

// statusPastQueued reports whether the status shows the task started or finished: what the
// controller writes only once its record holds as much.
func statusPastQueued(task *workflowv1alpha1.WorkflowTask) bool {
	_, finished := statusVerdict(task)
	p := task.Status.Phase
	return finished || task.Status.StartTime != nil || p == workflowv1alpha1.TaskPhaseProcessing || p == workflowv1alpha1.TaskPhaseSuspending
}

// describeRecord says in a few words what a rebuilt record holds.
func describeRecord(rec taskRecord) string {
	if rec.finished() {
		return fmt.Sprintf("finished, phase %s (%s)", rec.Phase, rec.Reason)
	}
	return "its Job was created; not finished"
}

// recoverRecord rebuilds a lost record from what outlives it: the task's Job and the status the
// controller wrote from the record. A task that finished stays finished, with the verdict and
// completion time its status shows, or else the verdict its ended Job gives; a task whose Job
// was created (it exists, or the status shows the task started) is never given a second one: a
// Job missing later is a deleted Job. A new task (no status, no Job) gets an empty record.
//
// The status is consulted only here, for a record that is gone: while there is a record, the
// status is computed from it and never believed.
func recoverRecord(task *workflowv1alpha1.WorkflowTask, job *batchv1.Job, now metav1.Time) taskRecord {
	var rec taskRecord
	st := &task.Status
	if job != nil || st.StartTime != nil ||
		st.Phase == workflowv1alpha1.TaskPhaseProcessing || st.Phase == workflowv1alpha1.TaskPhaseSuspending {
		rec.JobCreated = true // a Processing or Suspending task's Job was seen
	}
	rec.StartTime = st.StartTime.DeepCopy()
	if state, ok := statusVerdict(task); ok {
		rec.Phase, rec.Reason, rec.Message = state.phase, state.reason, truncateUTF8(state.message, maxRecordMessage)
		rec.CompletionTime = st.CompletionTime.DeepCopy()
		if rec.CompletionTime == nil {
			rec.CompletionTime = &now
		}
		return rec
	}
	if job != nil && podsGone(job) {
		state := observeState(task, rec, jobObservation{job: job})
		end := now
		if c := jobEnd(job); c != nil && !c.LastTransitionTime.IsZero() {
			end = c.LastTransitionTime
		}
		rec = advanceRecord(rec, jobObservation{job: job}, state, end)
	}
	return rec
}

// statusVerdict is the verdict the task's status shows: a finished phase, or a condition only a
// finished task has (Canceled=True, Failed=True, Ready=True: completed), with the reason and
// message of that condition.
func statusVerdict(task *workflowv1alpha1.WorkflowTask) (taskState, bool) {
	conds := task.Status.Conditions
	phase := task.Status.Phase
	if !phase.IsFinished() {
		switch {
		case meta.IsStatusConditionTrue(conds, workflowv1alpha1.ConditionCanceled):
			phase = workflowv1alpha1.TaskPhaseCanceled
		case meta.IsStatusConditionTrue(conds, workflowv1alpha1.ConditionFailed):
			phase = workflowv1alpha1.TaskPhaseError
		case meta.IsStatusConditionTrue(conds, workflowv1alpha1.ConditionReady):
			phase = workflowv1alpha1.TaskPhaseCompleted
		default:
			return taskState{}, false
		}
	}
	verdictCondition := map[workflowv1alpha1.TaskPhase]string{
		workflowv1alpha1.TaskPhaseCompleted: workflowv1alpha1.ConditionReady,
		workflowv1alpha1.TaskPhaseError:     workflowv1alpha1.ConditionFailed,
		workflowv1alpha1.TaskPhaseCanceled:  workflowv1alpha1.ConditionCanceled,
	}[phase]
	state := taskState{phase: phase, reason: string(phase)}
	if c := meta.FindStatusCondition(conds, verdictCondition); c != nil && c.Status == metav1.ConditionTrue {
		state.reason, state.message = c.Reason, c.Message
	}
	return state, true
}

// forgedVerdict reports whether the record's finished verdict cannot be the controller's: the
// task was not canceled and its own Job is running (not being deleted, no condition that ends
// it). The controller reaches a verdict only from a Job that ended (SuccessCriteriaMet,
// Complete, FailureTarget, Failed), that is gone, or that could not be created, or from a
// cancel.
func forgedVerdict(task *workflowv1alpha1.WorkflowTask, rec taskRecord, job *batchv1.Job) bool {
	return rec.finished() && !isCancelRequested(task) && job != nil && job.DeletionTimestamp.IsZero() && !jobEnded(job)
}

// jobEnded reports whether the Job has a condition that ends it, final or about to be.
func jobEnded(job *batchv1.Job) bool {
	return jobEnd(job) != nil || isJobCondition(job, batchv1.JobSuccessCriteriaMet) || isJobCondition(job, batchv1.JobFailureTarget)
}

// jobEnd is the Job's final condition (Complete or Failed), nil while it has none.
func jobEnd(job *batchv1.Job) *batchv1.JobCondition {
	if c := jobCondition(job, batchv1.JobComplete); c != nil {
		return c
	}
	return jobCondition(job, batchv1.JobFailed)
}

// cachedJob is the task's own Job as the cache has it, nil when there is none or another
// owner's holds the name. It never reads past the cache: a Job the cache does not have yet is
// one this controller created moments ago, before any verdict.
func (r *WorkflowTaskReconciler) cachedJob(ctx context.Context, task *workflowv1alpha1.WorkflowTask) (*batchv1.Job, error) {
	job := &batchv1.Job{}
	err := r.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}, job)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting Job %s/%s: %w", task.Namespace, jobName(task), err)
	case !metav1.IsControlledBy(job, task):
		return nil, nil
	}
	return job, nil
}
