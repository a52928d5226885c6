package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// ttlExpiry is when a finished task with ttlSecondsAfterFinished is due for deletion. It counts
// from the completion time in the controller's own record, never from the status (which a
// task's pods could have written).
func ttlExpiry(task *workflowv1alpha1.WorkflowTask, rec taskRecord) (time.Time, bool) {
	ttl := task.Spec.TTLSecondsAfterFinished
	if ttl == nil || !rec.finished() || rec.CompletionTime == nil {
		return time.Time{}, false
	}
	return rec.CompletionTime.Add(time.Duration(*ttl) * time.Second), true
}

// ttlRequeueAfter is how long until the task expires; 0 when it never does.
func ttlRequeueAfter(task *workflowv1alpha1.WorkflowTask, rec taskRecord, now time.Time) time.Duration {
	at, ok := ttlExpiry(task, rec)
	if !ok {
		return 0
	}
	return max(at.Sub(now), minRequeueAfter)
}

// deleteIfExpired deletes a finished task whose TTL has passed, with its Job, pods and runner
// identity (garbage collection). The UID precondition keeps a newer task of the same name safe.
func (r *WorkflowTaskReconciler) deleteIfExpired(ctx context.Context, task *workflowv1alpha1.WorkflowTask, rec taskRecord, now time.Time) (bool, error) {
	at, ok := ttlExpiry(task, rec)
	if !ok || now.Before(at) {
		return false, nil
	}
	log.FromContext(ctx).V(2).Info("Deleting finished task: ttlSecondsAfterFinished passed", "finishedAt", rec.CompletionTime)
	err := r.Delete(ctx, task, client.PropagationPolicy(metav1.DeletePropagationBackground),
		client.Preconditions{UID: &task.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("deleting expired task: %w", err)
	}
	return true, nil
}
