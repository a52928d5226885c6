package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Reasons only the controller uses (the shared ones are in api/v1alpha1).
const (
	ReasonJobInvalid  = "JobInvalid"
	ReasonJobConflict = "JobConflict"
)

// Messages of the conditions.
const (
	msgQueued      = "Job %s is created; waiting for one of its pods to run"
	msgProcessing  = "Job %s is running (%d active pod(s))"
	msgSuspended   = "The task is suspended; its Job's pods are stopped until spec.suspend is false"
	msgResumed     = "The task was resumed"
	msgCompleted   = "Job %s completed"
	msgJobFailed   = "Job %s failed: %s"
	msgJobDeleted  = "Job %s was deleted while the task was running; the task is not re-run"
	msgJobInvalid  = "The task's Job cannot be created: %s"
	msgCanceled    = "The task was canceled: its Job was deleted, its record and last progress are kept"
	msgProgressing = "Progress is being reported within progressDeadlineSeconds (%ds)"
	msgStalled     = "No progress entry changed for more than %s (progressDeadlineSeconds), since %s"
)

// taskState is a task's phase with the reason and message behind it.
type taskState struct {
	phase   workflowv1alpha1.TaskPhase
	reason  string
	message string
}

// computeStatus is the task's new status, from the task, what was seen of its Job, and the
// clock. It is a pure function: no client, no clock of its own.
func computeStatus(task *workflowv1alpha1.WorkflowTask, obs jobObservation, now time.Time) workflowv1alpha1.WorkflowTaskStatus {
	status := *task.Status.DeepCopy()
	state := observeState(task, obs)

	status.ID = workflowv1alpha1.TaskIDFromUID(task.UID)
	status.ObservedGeneration = task.Generation
	status.ProgressSummary = workflowv1alpha1.ProgressSummary(status.Progress)
	status.Phase = state.phase
	if state.phase == workflowv1alpha1.TaskPhaseProcessing && status.StartTime == nil {
		status.StartTime = ptr.To(metav1.NewTime(now))
	}
	if state.phase.IsFinished() && status.CompletionTime == nil {
		status.CompletionTime = ptr.To(metav1.NewTime(now))
	}
	setConditions(&status, task, state, now)
	return status
}

// observeState decides the phase. A finished task keeps its phase; otherwise the task's own
// requests (cancel, suspend) come first, then the Job's conditions, then its pods.
func observeState(task *workflowv1alpha1.WorkflowTask, obs jobObservation) taskState {
	name := jobName(task)
	switch {
	case task.Status.Phase.IsFinished():
		ready := meta.FindStatusCondition(task.Status.Conditions, workflowv1alpha1.ConditionReady)
		if ready == nil {
			return taskState{phase: task.Status.Phase, reason: string(task.Status.Phase)}
		}
		return taskState{phase: task.Status.Phase, reason: ready.Reason, message: ready.Message}
	case isCancelRequested(task):
		return taskState{workflowv1alpha1.TaskPhaseCanceled, workflowv1alpha1.ReasonCanceled, msgCanceled}
	case obs.invalid != "":
		return taskState{workflowv1alpha1.TaskPhaseError, ReasonJobInvalid, fmt.Sprintf(msgJobInvalid, obs.invalid)}
	case obs.conflict != "":
		return taskState{workflowv1alpha1.TaskPhaseError, ReasonJobConflict, obs.conflict}
	case obs.missing:
		return taskState{workflowv1alpha1.TaskPhaseError, workflowv1alpha1.ReasonJobDeleted, fmt.Sprintf(msgJobDeleted, name)}
	case obs.job == nil:
		return taskState{workflowv1alpha1.TaskPhaseQueued, workflowv1alpha1.ReasonQueued, fmt.Sprintf(msgQueued, name)}
	}
	job := obs.job
	if isJobCondition(job, batchv1.JobComplete) || isJobCondition(job, batchv1.JobSuccessCriteriaMet) {
		return taskState{workflowv1alpha1.TaskPhaseCompleted, workflowv1alpha1.ReasonCompleted, fmt.Sprintf(msgCompleted, name)}
	}
	for _, t := range []batchv1.JobConditionType{batchv1.JobFailed, batchv1.JobFailureTarget} {
		if c := jobCondition(job, t); c != nil {
			reason := workflowv1alpha1.ReasonJobFailed
			if c.Reason == batchv1.JobReasonDeadlineExceeded {
				reason = workflowv1alpha1.ReasonDeadlineExceeded
			}
			return taskState{workflowv1alpha1.TaskPhaseError, reason, fmt.Sprintf(msgJobFailed, name, c.Message)}
		}
	}
	if ptr.Deref(task.Spec.Suspend, false) || ptr.Deref(job.Spec.Suspend, false) {
		return taskState{workflowv1alpha1.TaskPhaseSuspending, workflowv1alpha1.ReasonSuspended, msgSuspended}
	}
	if hasStarted(task, job) {
		return taskState{workflowv1alpha1.TaskPhaseProcessing, workflowv1alpha1.ReasonProcessing,
			fmt.Sprintf(msgProcessing, name, job.Status.Active)}
	}
	return taskState{workflowv1alpha1.TaskPhaseQueued, workflowv1alpha1.ReasonQueued, fmt.Sprintf(msgQueued, name)}
}

// hasStarted: a pod of the Job is running (ready), or ran before (the task has a start time or
// progress). A started task between two pod attempts is still Processing, not Queued again.
func hasStarted(task *workflowv1alpha1.WorkflowTask, job *batchv1.Job) bool {
	return task.Status.StartTime != nil || len(task.Status.Progress) > 0 || ptr.Deref(job.Status.Ready, 0) > 0
}

// jobCondition returns the Job's condition of type t when it is True.
func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == t && c.Status == "True" {
			return c
		}
	}
	return nil
}

func isJobCondition(job *batchv1.Job, t batchv1.JobConditionType) bool {
	return jobCondition(job, t) != nil
}

// setConditions writes the kstatus conditions (Ready, Reconciling, Stalled) and the task's own
// (Suspended, Canceled, Failed) for the state.
func setConditions(status *workflowv1alpha1.WorkflowTaskStatus, task *workflowv1alpha1.WorkflowTask, state taskState, now time.Time) {
	set := func(t string, ok bool, reason, message string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: message,
			ObservedGeneration: task.Generation, LastTransitionTime: metav1.NewTime(now),
		})
	}
	p := state.phase
	set(workflowv1alpha1.ConditionReady, p == workflowv1alpha1.TaskPhaseCompleted, state.reason, state.message)
	inFlight := p == workflowv1alpha1.TaskPhaseQueued || p == workflowv1alpha1.TaskPhaseProcessing
	set(workflowv1alpha1.ConditionReconciling, inFlight, state.reason, state.message)

	switch stall := checkStall(task, status, now); {
	case p == workflowv1alpha1.TaskPhaseError:
		set(workflowv1alpha1.ConditionStalled, true, state.reason, state.message)
	case p == workflowv1alpha1.TaskPhaseProcessing && stall.stalled:
		set(workflowv1alpha1.ConditionStalled, true, workflowv1alpha1.ReasonProgressDeadlineExceeded,
			fmt.Sprintf(msgStalled, stall.deadline, stall.since.UTC().Format(time.RFC3339)))
	case p == workflowv1alpha1.TaskPhaseProcessing:
		set(workflowv1alpha1.ConditionStalled, false, workflowv1alpha1.ReasonProgressing,
			fmt.Sprintf(msgProgressing, int(stall.deadline.Seconds())))
	default:
		set(workflowv1alpha1.ConditionStalled, false, state.reason, state.message)
	}

	suspended := p == workflowv1alpha1.TaskPhaseSuspending
	if suspended {
		set(workflowv1alpha1.ConditionSuspended, true, workflowv1alpha1.ReasonSuspended, msgSuspended)
	} else if meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionSuspended) != nil {
		set(workflowv1alpha1.ConditionSuspended, false, workflowv1alpha1.ReasonResumed, msgResumed)
	}
	if p == workflowv1alpha1.TaskPhaseCanceled {
		set(workflowv1alpha1.ConditionCanceled, true, state.reason, state.message)
	}
	if p == workflowv1alpha1.TaskPhaseError {
		set(workflowv1alpha1.ConditionFailed, true, state.reason, state.message)
	}
}

// updateStatusIfChanged writes the new status in one merge patch, only when it differs. The
// patch carries only the fields that changed, so progress entries written meanwhile by the
// task's pods (server-side apply) are never overwritten.
func (r *WorkflowTaskReconciler) updateStatusIfChanged(ctx context.Context, task *workflowv1alpha1.WorkflowTask,
	status workflowv1alpha1.WorkflowTaskStatus) error {
	if equality.Semantic.DeepEqual(task.Status, status) {
		return nil
	}
	patch := client.MergeFrom(task.DeepCopy())
	task.Status = status
	if err := r.Status().Patch(ctx, task, patch); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}
