package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	msgQueued         = "Job %s is created; waiting for one of its pods to run"
	msgProcessing     = "Job %s is running (%d active pod(s))"
	msgSuspended      = "The task is suspended; its Job's pods are stopped until spec.suspend is false"
	msgResumed        = "The task was resumed"
	msgCompleted      = "Job %s completed"
	msgJobFailed      = "Job %s failed: %s"
	msgJobDeleted     = "Job %s was deleted while the task was running; the task is not re-run"
	msgJobInvalid     = "The task's Job cannot be created: %s"
	msgCanceled       = "The task was canceled: its Job was deleted, its record and last progress are kept"
	msgProgressing    = "Progress is being reported within progressDeadlineSeconds (%ds)"
	msgStalled        = "No progress entry changed for more than %s (progressDeadlineSeconds), since %s"
	msgUnobserved     = "The task's Job could not be read; it is looked at again"
	msgReconcileError = "Reconciling the task failed and is retried: %v"
)

// taskState is a task's phase with the reason and message behind it.
type taskState struct {
	phase   workflowv1alpha1.TaskPhase
	reason  string
	message string
}

// statusInputs is everything computeStatus reads besides the task: the controller's own record,
// what it saw of the Job in this reconcile, the step that failed (if any), when it first saw
// the current value of progress entries that carry no believable updateTime, and the clock.
type statusInputs struct {
	record taskRecord
	obs    jobObservation
	err    error
	seen   map[string]time.Time
	now    time.Time
}

// computeStatus is the task's new status and record. It is a pure function: no client, no clock
// of its own. Everything but status.progress (the pods' part) is recomputed from the record and
// the observations: whatever else the status read back claims is overwritten, not believed.
func computeStatus(task *workflowv1alpha1.WorkflowTask, in statusInputs) (workflowv1alpha1.WorkflowTaskStatus, taskRecord) {
	state := observeState(task, in.record, in.obs)
	now := metav1.NewTime(in.now).Rfc3339Copy()
	rec := advanceRecord(in.record, in.obs, state, now)

	status := *task.Status.DeepCopy()
	status.ID = workflowv1alpha1.TaskIDFromUID(task.UID)
	status.ObservedGeneration = task.Generation
	status.ProgressSummary = workflowv1alpha1.ProgressSummary(status.Progress)
	status.Phase = state.phase
	status.StartTime = rec.StartTime.DeepCopy()
	status.CompletionTime = rec.CompletionTime.DeepCopy()
	status.Conditions = operatorConditions(status.Conditions, state.phase)
	setConditions(&status, task, state, in)
	return status, rec
}

// observeState decides the phase from the controller's own evidence. A verdict the controller
// recorded stays; otherwise the task's own requests (cancel, suspend) come first, then what was
// seen of the Job, then its pods. The phase in the status read back is never consulted.
func observeState(task *workflowv1alpha1.WorkflowTask, rec taskRecord, obs jobObservation) taskState {
	name := jobName(task)
	switch {
	case rec.finished():
		return taskState{rec.Phase, rec.Reason, rec.Message}
	case isCancelRequested(task):
		return taskState{workflowv1alpha1.TaskPhaseCanceled, workflowv1alpha1.ReasonCanceled, msgCanceled}
	case obs.invalid != "":
		return taskState{workflowv1alpha1.TaskPhaseError, ReasonJobInvalid, fmt.Sprintf(msgJobInvalid, obs.invalid)}
	case obs.conflict != "":
		return taskState{workflowv1alpha1.TaskPhaseError, ReasonJobConflict, obs.conflict}
	case obs.missing:
		return taskState{workflowv1alpha1.TaskPhaseError, workflowv1alpha1.ReasonJobDeleted, fmt.Sprintf(msgJobDeleted, name)}
	case obs.job == nil && rec.StartTime != nil: // the Job could not be read this time
		return taskState{workflowv1alpha1.TaskPhaseProcessing, workflowv1alpha1.ReasonProcessing, msgUnobserved}
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
			msg := fmt.Sprintf(msgJobFailed, name, c.Message)
			if obs.failure != "" {
				msg += "; " + obs.failure
			}
			return taskState{workflowv1alpha1.TaskPhaseError, reason, msg}
		}
	}
	if ptr.Deref(task.Spec.Suspend, false) || ptr.Deref(job.Spec.Suspend, false) {
		return taskState{workflowv1alpha1.TaskPhaseSuspending, workflowv1alpha1.ReasonSuspended, msgSuspended}
	}
	if hasStarted(task, rec, job) {
		return taskState{workflowv1alpha1.TaskPhaseProcessing, workflowv1alpha1.ReasonProcessing,
			fmt.Sprintf(msgProcessing, name, job.Status.Active)}
	}
	return taskState{workflowv1alpha1.TaskPhaseQueued, workflowv1alpha1.ReasonQueued, fmt.Sprintf(msgQueued, name)}
}

// hasStarted: a pod of the Job is running (ready), or ran before (the controller recorded a
// start, or a pod reported progress). A started task between two pod attempts is still
// Processing, not Queued again.
func hasStarted(task *workflowv1alpha1.WorkflowTask, rec taskRecord, job *batchv1.Job) bool {
	return rec.StartTime != nil || len(task.Status.Progress) > 0 || ptr.Deref(job.Status.Ready, 0) > 0
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

// operatorConditions keeps the conditions the operator may have written for a task in phase p,
// in order, and drops any other: an unknown type, or Canceled/Failed on a task not in that phase,
// can only have come from someone else.
func operatorConditions(conds []metav1.Condition, p workflowv1alpha1.TaskPhase) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(conds))
	for _, c := range conds {
		switch c.Type {
		case workflowv1alpha1.ConditionReady, workflowv1alpha1.ConditionReconciling,
			workflowv1alpha1.ConditionStalled, workflowv1alpha1.ConditionSuspended:
		case workflowv1alpha1.ConditionCanceled:
			if p != workflowv1alpha1.TaskPhaseCanceled {
				continue
			}
		case workflowv1alpha1.ConditionFailed:
			if p != workflowv1alpha1.TaskPhaseError {
				continue
			}
		default:
			continue
		}
		out = append(out, c)
	}
	return out
}

// setConditions writes the kstatus conditions (Ready, Reconciling, Stalled) and the task's own
// (Suspended, Canceled, Failed) for the state. On an unfinished task, a failed reconcile step
// shows too: a runner conflict as Stalled (it needs someone to remove the object), any other
// error as Reconciling (it is retried).
func setConditions(status *workflowv1alpha1.WorkflowTaskStatus, task *workflowv1alpha1.WorkflowTask, state taskState, in statusInputs) {
	now := in.now
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
	// Ready: True only once completed. A suspended task has none (kstatus reads that as Current:
	// it is where its spec asks it to be); it returns, False, when the task resumes.
	if p == workflowv1alpha1.TaskPhaseSuspending {
		meta.RemoveStatusCondition(&status.Conditions, workflowv1alpha1.ConditionReady)
	} else {
		set(workflowv1alpha1.ConditionReady, p == workflowv1alpha1.TaskPhaseCompleted, state.reason, state.message)
	}

	// Reconciling and Stalled are never both True: a task that stopped reporting progress is
	// Stalled (kstatus Failed) until progress moves again; a failed or canceled task is Stalled
	// for good, so that GitOps tools and kubectl wait settle on it.
	stall := checkStall(task, status, in.seen, now)
	switch {
	case p == workflowv1alpha1.TaskPhaseError, p == workflowv1alpha1.TaskPhaseCanceled:
		set(workflowv1alpha1.ConditionReconciling, false, state.reason, state.message)
		set(workflowv1alpha1.ConditionStalled, true, state.reason, state.message)
	case p == workflowv1alpha1.TaskPhaseProcessing && stall.stalled:
		msg := fmt.Sprintf(msgStalled, stall.deadline, stall.since.UTC().Format(time.RFC3339))
		set(workflowv1alpha1.ConditionReconciling, false, workflowv1alpha1.ReasonProgressDeadlineExceeded, msg)
		set(workflowv1alpha1.ConditionStalled, true, workflowv1alpha1.ReasonProgressDeadlineExceeded, msg)
	case p == workflowv1alpha1.TaskPhaseProcessing:
		set(workflowv1alpha1.ConditionReconciling, true, state.reason, state.message)
		set(workflowv1alpha1.ConditionStalled, false, workflowv1alpha1.ReasonProgressing,
			fmt.Sprintf(msgProgressing, int(stall.deadline.Seconds())))
	default: // Queued: in flight; Completed, Suspending: settled
		set(workflowv1alpha1.ConditionReconciling, p == workflowv1alpha1.TaskPhaseQueued, state.reason, state.message)
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

	defer sortConditions(status.Conditions)
	if in.err == nil || p.IsFinished() {
		return
	}
	var conflict *runnerConflictError
	if errors.As(in.err, &conflict) {
		set(workflowv1alpha1.ConditionReconciling, false, workflowv1alpha1.ReasonRunnerConflict, conflict.Error())
		set(workflowv1alpha1.ConditionStalled, true, workflowv1alpha1.ReasonRunnerConflict, conflict.Error())
		return
	}
	msg := truncateUTF8(fmt.Sprintf(msgReconcileError, in.err), maxRecordMessage)
	set(workflowv1alpha1.ConditionReconciling, true, workflowv1alpha1.ReasonReconcileError, msg)
	set(workflowv1alpha1.ConditionStalled, false, workflowv1alpha1.ReasonReconcileError, msg)
}

// conditionOrder is the order conditions are listed in, whatever order they were set in.
var conditionOrder = map[string]int{
	workflowv1alpha1.ConditionReady: 0, workflowv1alpha1.ConditionReconciling: 1, workflowv1alpha1.ConditionStalled: 2,
	workflowv1alpha1.ConditionSuspended: 3, workflowv1alpha1.ConditionCanceled: 4, workflowv1alpha1.ConditionFailed: 5,
}

func sortConditions(conds []metav1.Condition) {
	slices.SortStableFunc(conds, func(a, b metav1.Condition) int { return conditionOrder[a.Type] - conditionOrder[b.Type] })
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
