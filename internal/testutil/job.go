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

// JobConditionNow is a True Job condition as the Job controller sets it, probed and changed now.
func JobConditionNow(t batchv1.JobConditionType, reason, message string) batchv1.JobCondition {
	now := metav1.Now()
	return batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message,
		LastProbeTime: now, LastTransitionTime: now}
}

// CompletionSteps are the status changes, one write each, by which the Job controller completes
// a Job whose pod succeeded (Kubernetes 1.37's order): SuccessCriteriaMet, then Complete.
func CompletionSteps() []func(*batchv1.JobStatus) {
	const msg = "Reached expected number of succeeded pods"
	return []func(*batchv1.JobStatus){
		func(s *batchv1.JobStatus) {
			if s.StartTime == nil {
				s.StartTime = ptr.To(metav1.Now())
			}
			s.Active, s.Ready, s.Succeeded = 0, ptr.To[int32](0), 1
			s.Conditions = append(s.Conditions, JobConditionNow(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonCompletionsReached, msg))
		},
		func(s *batchv1.JobStatus) {
			s.CompletionTime = ptr.To(metav1.Now())
			s.Conditions = append(s.Conditions, JobConditionNow(batchv1.JobComplete, batchv1.JobReasonCompletionsReached, msg))
		},
	}
}

// FailureSteps are the status changes, one write each, by which the Job controller fails a Job:
// FailureTarget, then Failed, with its reason.
func FailureSteps(reason, message string) []func(*batchv1.JobStatus) {
	return []func(*batchv1.JobStatus){
		func(s *batchv1.JobStatus) {
			if s.StartTime == nil {
				s.StartTime = ptr.To(metav1.Now())
			}
			s.Active, s.Ready, s.Failed = 0, ptr.To[int32](0), 1
			s.Conditions = append(s.Conditions, JobConditionNow(batchv1.JobFailureTarget, reason, message))
		},
		func(s *batchv1.JobStatus) {
			s.Conditions = append(s.Conditions, JobConditionNow(batchv1.JobFailed, reason, message))
		},
	}
}
