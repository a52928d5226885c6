package controllers

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// forgedFields lists the operator's status fields whose value, as read back, the operator
// cannot have written: it differs from what the operator established in a way no transition
// of its own produces. A finished phase never changes; start and completion times are written
// once from the record; the ID follows from metadata.uid; observedGeneration never runs ahead
// of metadata.generation; Ready never goes from True to False, nor away but on suspension; the
// operator writes no condition type it does not know and no Canceled/Failed on a task that is
// not in that phase. The ValidatingAdmissionPolicy of config/admission refuses such writes;
// this is what the controller does where the policy is missing.
func forgedFields(old, updated *workflowv1alpha1.WorkflowTaskStatus) []string {
	var fields []string
	if old.Phase.IsFinished() && old.Phase != updated.Phase {
		fields = append(fields, "status.phase")
	}
	if old.StartTime != nil && !old.StartTime.Equal(updated.StartTime) {
		fields = append(fields, "status.startTime")
	}
	if old.CompletionTime != nil && !old.CompletionTime.Equal(updated.CompletionTime) {
		fields = append(fields, "status.completionTime")
	}
	if old.ID != "" && old.ID != updated.ID {
		fields = append(fields, "status.id")
	}
	if old.ObservedGeneration > updated.ObservedGeneration {
		fields = append(fields, "status.observedGeneration")
	}
	if forgedConditions(old.Conditions, updated.Conditions, updated.Phase) {
		fields = append(fields, "status.conditions")
	}
	return fields
}

func forgedConditions(old, updated []metav1.Condition, phase workflowv1alpha1.TaskPhase) bool {
	for _, c := range old {
		if c.Type == workflowv1alpha1.ConditionReady && phase == workflowv1alpha1.TaskPhaseSuspending {
			continue // the operator drops Ready while a task is suspended
		}
		if meta.FindStatusCondition(updated, c.Type) == nil {
			return true // dropped: not a condition the operator writes for this task
		}
	}
	return meta.IsStatusConditionTrue(old, workflowv1alpha1.ConditionReady) &&
		!meta.IsStatusConditionTrue(updated, workflowv1alpha1.ConditionReady)
}

// correctionEvent is the StatusCorrected event for forged fields, or nil when there are none.
func correctionEvent(old, updated *workflowv1alpha1.WorkflowTaskStatus) *event {
	fields := forgedFields(old, updated)
	if len(fields) == 0 {
		return nil
	}
	note := fmt.Sprintf("%s changed by someone other than the operator (the status claimed phase %q); restored from what the operator observed: phase %q",
		strings.Join(fields, ", "), old.Phase, updated.Phase)
	return &event{corev1.EventTypeWarning, EventStatusCorrected, "CorrectStatus", note}
}
