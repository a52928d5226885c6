package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// CacheOptions are the manager's cache: of the kinds the controller owns only the objects it
// created (by label), so it does not hold every Job, ServiceAccount and Role of the cluster, and
// of every object only what the manager reads (trimForCache).
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue})
	return cache.Options{
		DefaultTransform: trimForCache,
		ByObject: map[client.Object]cache.ByObject{
			&batchv1.Job{}:           {Label: managed},
			&corev1.ServiceAccount{}: {Label: managed},
			&rbacv1.Role{}:           {Label: managed},
			&rbacv1.RoleBinding{}:    {Label: managed},
		},
	}
}

// trimForCache drops from an object what nothing in the manager reads, so that its memory
// grows with the number of tasks, not with the size of their pod templates or the number of
// their writers:
//   - managedFields (an entry per writer: one per reporter pod of a task);
//   - a Job's pod template (the controller reads a Job's status and spec.suspend; it patches
//     only spec.suspend, computed between two trimmed copies);
//   - a task's pod template once its record says the Job was created: the template is read only
//     to create the Job, which never happens again (a Job gone later is a deleted Job, an error),
//     and the endpoint serves progress only. The record is metadata, which the task's pods
//     cannot write.
//
// Every write the controller makes is a patch of the fields it changes, never an update of a
// whole cached object, so nothing trimmed here is ever written back.
func trimForCache(obj any) (any, error) {
	if o, ok := obj.(client.Object); ok {
		o.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *batchv1.Job:
		o.Spec.Template = corev1.PodTemplateSpec{}
	case *workflowv1alpha1.WorkflowTask:
		if readRecord(o).JobCreated {
			o.Spec.Template = corev1.PodTemplateSpec{}
		}
	}
	return obj, nil
}
