// Package testutil holds fluent builders for the objects tests create, in the style of kueue's
// pkg/util/testing: MakeTask("t", "ns").Owner("alice").Obj().
package testutil

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// TaskWrapper builds a WorkflowTask.
type TaskWrapper struct{ workflowv1alpha1.WorkflowTask }

// MakeTask returns a valid upload task owned by "alice" whose pod runs one container.
func MakeTask(name, namespace string) *TaskWrapper {
	return &TaskWrapper{workflowv1alpha1.WorkflowTask{
		TypeMeta:   metav1.TypeMeta{APIVersion: workflowv1alpha1.GroupVersion.String(), Kind: "WorkflowTask"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: workflowv1alpha1.WorkflowTaskSpec{
			Type:  workflowv1alpha1.TaskTypeUpload,
			Owner: "alice",
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "worker", Image: "registry.k8s.io/e2e-test-images/busybox:1.36"}},
			}},
		},
	}}
}

// Obj returns the built task.
func (w *TaskWrapper) Obj() *workflowv1alpha1.WorkflowTask { return &w.WorkflowTask }

// Clone returns a deep copy of the builder, to derive variants.
func (w *TaskWrapper) Clone() *TaskWrapper { return &TaskWrapper{*w.DeepCopy()} }

// Type sets spec.type.
func (w *TaskWrapper) Type(t workflowv1alpha1.TaskType) *TaskWrapper { w.Spec.Type = t; return w }

// Owner sets spec.owner.
func (w *TaskWrapper) Owner(owner string) *TaskWrapper { w.Spec.Owner = owner; return w }

// Image sets the image of the first container.
func (w *TaskWrapper) Image(image string) *TaskWrapper {
	w.Spec.Template.Spec.Containers[0].Image = image
	return w
}

// Label sets a label on the task.
func (w *TaskWrapper) Label(k, v string) *TaskWrapper {
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	w.Labels[k] = v
	return w
}

// Annotation sets an annotation on the task.
func (w *TaskWrapper) Annotation(k, v string) *TaskWrapper {
	if w.Annotations == nil {
		w.Annotations = map[string]string{}
	}
	w.Annotations[k] = v
	return w
}

// BackoffLimit sets spec.backoffLimit.
func (w *TaskWrapper) BackoffLimit(n int32) *TaskWrapper { w.Spec.BackoffLimit = &n; return w }

// ActiveDeadlineSeconds sets spec.activeDeadlineSeconds.
func (w *TaskWrapper) ActiveDeadlineSeconds(s int64) *TaskWrapper {
	w.Spec.ActiveDeadlineSeconds = &s
	return w
}

// TTLSecondsAfterFinished sets spec.ttlSecondsAfterFinished.
func (w *TaskWrapper) TTLSecondsAfterFinished(s int32) *TaskWrapper {
	w.Spec.TTLSecondsAfterFinished = &s
	return w
}

// ProgressDeadlineSeconds sets spec.progressDeadlineSeconds.
func (w *TaskWrapper) ProgressDeadlineSeconds(s int32) *TaskWrapper {
	w.Spec.ProgressDeadlineSeconds = &s
	return w
}

// Suspend sets spec.suspend.
func (w *TaskWrapper) Suspend(b bool) *TaskWrapper { w.Spec.Suspend = ptr.To(b); return w }

// Cancel sets spec.cancel.
func (w *TaskWrapper) Cancel(b bool) *TaskWrapper { w.Spec.Cancel = ptr.To(b); return w }

// Progress appends a progress entry updated at the given time.
func (w *TaskWrapper) Progress(typ string, current, total int64, at time.Time) *TaskWrapper {
	w.Status.Progress = append(w.Status.Progress, workflowv1alpha1.ProgressEntry{
		Type: typ, Current: current, Total: total, UpdateTime: ptr.To(metav1.NewMicroTime(at)),
	})
	return w
}

// ProgressIdentifier sets the identifier of the last progress entry.
func (w *TaskWrapper) ProgressIdentifier(id string) *TaskWrapper {
	w.Status.Progress[len(w.Status.Progress)-1].Identifier = id
	return w
}

// Phase sets status.phase.
func (w *TaskWrapper) Phase(p workflowv1alpha1.TaskPhase) *TaskWrapper { w.Status.Phase = p; return w }

// ID sets status.id.
func (w *TaskWrapper) ID(id string) *TaskWrapper { w.Status.ID = id; return w }

// UID sets metadata.uid (from which status.id derives).
func (w *TaskWrapper) UID(uid types.UID) *TaskWrapper { w.ObjectMeta.UID = uid; return w }

// StartTime sets status.startTime.
func (w *TaskWrapper) StartTime(t time.Time) *TaskWrapper {
	w.Status.StartTime = ptr.To(metav1.NewTime(t))
	return w
}

// Created sets metadata.creationTimestamp.
func (w *TaskWrapper) Created(t time.Time) *TaskWrapper {
	w.CreationTimestamp = metav1.NewTime(t)
	return w
}

// CompletionTime sets status.completionTime.
func (w *TaskWrapper) CompletionTime(t time.Time) *TaskWrapper {
	w.Status.CompletionTime = ptr.To(metav1.NewTime(t))
	return w
}

// ConditionAt sets a status condition with its message, last changed at a given time.
func (w *TaskWrapper) ConditionAt(typ string, status metav1.ConditionStatus, reason, message string, at time.Time) *TaskWrapper {
	meta.SetStatusCondition(&w.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message,
		LastTransitionTime: metav1.NewTime(at)})
	return w
}

// Condition sets a status condition (replacing one of the same type).
func (w *TaskWrapper) Condition(typ string, status metav1.ConditionStatus, reason string) *TaskWrapper {
	meta.SetStatusCondition(&w.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: reason})
	return w
}
