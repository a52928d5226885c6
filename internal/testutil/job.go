package testutil

import (
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// T0 is the tests' clock: a fixed instant pure tests compute from (T0.Add(…) for later ones).
var T0 = time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)

// JobWrapper builds a Job as the Job controller would show it.
type JobWrapper struct{ batchv1.Job }

// MakeJob returns an unsuspended Job with no pods yet.
func MakeJob(name, namespace string) *JobWrapper {
	return &JobWrapper{batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       batchv1.JobSpec{Suspend: ptr.To(false)},
	}}
}

// Obj returns the built Job.
func (w *JobWrapper) Obj() *batchv1.Job { return &w.Job }

// Active sets status.active: pods created and not finished.
func (w *JobWrapper) Active(n int32) *JobWrapper { w.Status.Active = n; return w }

// Ready sets status.ready: active pods that are ready.
func (w *JobWrapper) Ready(n int32) *JobWrapper { w.Status.Ready = ptr.To(n); return w }

// Suspend sets spec.suspend.
func (w *JobWrapper) Suspend(b bool) *JobWrapper { w.Spec.Suspend = ptr.To(b); return w }

// Condition adds a True condition.
func (w *JobWrapper) Condition(t batchv1.JobConditionType, reason, message string) *JobWrapper {
	w.Status.Conditions = append(w.Status.Conditions, batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message})
	return w
}
