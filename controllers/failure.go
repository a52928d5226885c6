package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// jobFailed reports whether the Job failed (or is about to: FailureTarget).
func jobFailed(job *batchv1.Job) bool {
	return isJobCondition(job, batchv1.JobFailed) || isJobCondition(job, batchv1.JobFailureTarget)
}

// podFailure reads, once the task's Job failed and before the verdict is recorded, how its last
// failed container ended, for the Failed condition's message. Pods are not cached: this is one
// uncached list per failed task. A failure to list is logged and leaves the detail out.
func (r *WorkflowTaskReconciler) podFailure(ctx context.Context, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job) string {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(task.Namespace),
		client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
		log.FromContext(ctx).Error(err, "Listing the failed Job's pods for their exit codes")
		return ""
	}
	return containerFailure(pods.Items)
}

// containerFailure names the container that failed last among pods: "container worker exited
// with code 3 (Error)", or "" when no container ended with a non-zero code.
func containerFailure(pods []corev1.Pod) string {
	var last *corev1.ContainerStateTerminated
	var name string
	for i := range pods {
		for _, s := range append(append([]corev1.ContainerStatus{}, pods[i].Status.InitContainerStatuses...), pods[i].Status.ContainerStatuses...) {
			t := s.State.Terminated
			if t == nil {
				t = s.LastTerminationState.Terminated
			}
			if t == nil || t.ExitCode == 0 {
				continue
			}
			if last == nil || t.FinishedAt.After(last.FinishedAt.Time) {
				last, name = t, s.Name
			}
		}
	}
	if last == nil {
		return ""
	}
	detail := fmt.Sprintf("container %s exited with code %d", name, last.ExitCode)
	if last.Reason != "" {
		detail += " (" + last.Reason + ")"
	}
	return detail
}
