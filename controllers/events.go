package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Event reasons, for `kubectl describe workflowtask`.
const (
	EventJobCreated      = "JobCreated"
	EventProcessing      = "Processing"
	EventSuspended       = "Suspended"
	EventResumed         = "Resumed"
	EventCompleted       = "Completed"
	EventFailed          = "Failed"
	EventCanceled        = "Canceled"
	EventProgressStalled = "ProgressStalled"
	EventProgressResumed = "ProgressResumed"
	// EventStatusCorrected: the status claimed what the operator did not write (a forged phase,
	// time or condition); the operator restored it from its own observations.
	EventStatusCorrected = "StatusCorrected"
	// EventRecordCorrected: the record annotation (workflow.taskops.dev/record) was removed or
	// garbled, and the operator rebuilt it; or it claimed a verdict the task's running Job
	// contradicts, and the operator dropped it.
	EventRecordCorrected = "RecordCorrected"
)

// event is one event to record on a task once its status is written.
type event struct {
	eventType, reason, action, note string
}

// statusEvents lists the events for going from the old status to the new: a correction of what
// someone else wrote, Job creation, phase changes, and the task stalling or moving again.
func statusEvents(old, updated *workflowv1alpha1.WorkflowTaskStatus, obs jobObservation) []event {
	var events []event
	oldPhase := old.Phase
	if e := correctionEvent(old, updated); e != nil {
		events = append(events, *e)
		if old.Phase.IsFinished() && old.Phase != updated.Phase {
			oldPhase = updated.Phase // a forged phase was undone: no transition to announce
		}
	}
	if obs.created {
		events = append(events, event{corev1.EventTypeNormal, EventJobCreated, "CreateJob", "Created Job " + obs.job.Name})
	}
	readyMsg := func() string {
		if c := meta.FindStatusCondition(updated.Conditions, workflowv1alpha1.ConditionReady); c != nil {
			return c.Message
		}
		return ""
	}
	if oldPhase != updated.Phase {
		switch updated.Phase {
		case workflowv1alpha1.TaskPhaseProcessing:
			if oldPhase == workflowv1alpha1.TaskPhaseSuspending {
				events = append(events, event{corev1.EventTypeNormal, EventResumed, "Resume", msgResumed})
			} else {
				events = append(events, event{corev1.EventTypeNormal, EventProcessing, "Start", readyMsg()})
			}
		case workflowv1alpha1.TaskPhaseQueued:
			if oldPhase == workflowv1alpha1.TaskPhaseSuspending {
				events = append(events, event{corev1.EventTypeNormal, EventResumed, "Resume", msgResumed})
			}
		case workflowv1alpha1.TaskPhaseSuspending:
			events = append(events, event{corev1.EventTypeNormal, EventSuspended, "Suspend", msgSuspended})
		case workflowv1alpha1.TaskPhaseCompleted:
			events = append(events, event{corev1.EventTypeNormal, EventCompleted, "Complete", readyMsg()})
		case workflowv1alpha1.TaskPhaseError:
			events = append(events, event{corev1.EventTypeWarning, EventFailed, "Fail", readyMsg()})
		case workflowv1alpha1.TaskPhaseCanceled:
			events = append(events, event{corev1.EventTypeNormal, EventCanceled, "Cancel", msgCanceled})
		}
	}
	if updated.Phase == workflowv1alpha1.TaskPhaseProcessing {
		wasStalled := isStalledByProgress(old)
		switch nowStalled := isStalledByProgress(updated); {
		case nowStalled && !wasStalled:
			events = append(events, event{corev1.EventTypeWarning, EventProgressStalled, "DetectStall", stalledMessage(updated)})
		case !nowStalled && wasStalled:
			events = append(events, event{corev1.EventTypeNormal, EventProgressResumed, "DetectStall", "Progress is moving again"})
		}
	}
	return events
}

func isStalledByProgress(s *workflowv1alpha1.WorkflowTaskStatus) bool {
	c := meta.FindStatusCondition(s.Conditions, workflowv1alpha1.ConditionStalled)
	return c != nil && c.Status == "True" && c.Reason == workflowv1alpha1.ReasonProgressDeadlineExceeded
}

func stalledMessage(s *workflowv1alpha1.WorkflowTaskStatus) string {
	return meta.FindStatusCondition(s.Conditions, workflowv1alpha1.ConditionStalled).Message
}
