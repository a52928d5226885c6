package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// Event reasons, for `kubectl describe workflowtask`. Those of announcements (the task's phase
// changes, stalls and progress milestones) say the same as the CloudEvents of controllers/notify:
// see vocabulary.
const (
	EventJobCreated      = "JobCreated"
	EventQueued          = "Queued"
	EventProcessing      = "Processing"
	EventSuspended       = "Suspended"
	EventResumed         = "Resumed"
	EventCompleted       = "Completed"
	EventFailed          = "Failed"
	EventCanceled        = "Canceled"
	EventProgressStalled = "ProgressStalled"
	EventProgressResumed = "ProgressResumed"
	// EventProgressMilestone: a progress entry with a total crossed 25, 50, 75 or 100 %.
	EventProgressMilestone = "ProgressMilestone"
	// EventNotificationDropped: announcements of the task were never delivered to a sink
	// (notify.EventNotificationDropped).
	EventNotificationDropped = notify.EventNotificationDropped
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

// statusEvents lists the events of this reconcile besides its announcements (announcementEvents):
// a correction of what someone else wrote, and the Job's creation.
func statusEvents(old, updated *workflowv1alpha1.WorkflowTaskStatus, obs jobObservation) []event {
	var events []event
	if e := correctionEvent(old, updated); e != nil {
		events = append(events, *e)
	}
	if obs.created {
		events = append(events, event{corev1.EventTypeNormal, EventJobCreated, "CreateJob", "Created Job " + obs.job.Name})
	}
	return events
}

func isStalledByProgress(s *workflowv1alpha1.WorkflowTaskStatus) bool {
	c := meta.FindStatusCondition(s.Conditions, workflowv1alpha1.ConditionStalled)
	return c != nil && c.Status == "True" && c.Reason == workflowv1alpha1.ReasonProgressDeadlineExceeded
}
