package controllers

import (
	"unique"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
			// The tasks' pods, which the progress endpoint's ingest path checks pushes against
			// (read only with --progress-ingest: the informer starts then).
			&corev1.Pod{}: {Label: managed},
		},
	}
}

// trimForCache drops from an object what nothing in the manager reads, so that its memory
// grows with the number of tasks, not with the size of their pod templates or the number of
// their writers, and shares the strings that thousands of cached objects repeat:
//   - managedFields (an entry per writer: one per reporter pod of a task);
//   - a Job's pod template, selector, pod failure and success policies and uncounted pods (the
//     controller reads a Job's status and spec.suspend; it patches only spec.suspend, computed
//     between two trimmed copies);
//   - a task's pod template once its record says the Job was created: the template is read only
//     to create the Job, which never happens again (a Job gone later is a deleted Job, an error),
//     and the endpoint serves progress only. The record is metadata, which the task's pods
//     cannot write;
//   - a pod's spec and status but its phase (the ingest path reads its owner, UID, deletion and
//     phase);
//   - repeated strings (namespace, label keys and values, owner references' apiVersion and kind,
//     conditions' type, status, reason and message) are interned: one copy however many objects
//     hold them (BenchmarkCacheMemory measures what is left per task).
//
// Every write the controller makes is a patch of the fields it changes, or an update of an
// object whose every field the controller sets (the runner identity, which is not trimmed), never
// an update of a trimmed object, so nothing trimmed here is ever written back.
func trimForCache(obj any) (any, error) {
	if o, ok := obj.(client.Object); ok {
		o.SetManagedFields(nil)
		internMeta(o)
	}
	switch o := obj.(type) {
	case *batchv1.Job:
		o.Spec.Template = corev1.PodTemplateSpec{}
		o.Spec.Selector, o.Spec.PodFailurePolicy, o.Spec.SuccessPolicy = nil, nil, nil
		o.Status.UncountedTerminatedPods = nil
		for i := range o.Status.Conditions {
			c := &o.Status.Conditions[i]
			c.Type, c.Status = batchv1.JobConditionType(intern(string(c.Type))), corev1.ConditionStatus(intern(string(c.Status)))
			c.Reason, c.Message = intern(c.Reason), intern(c.Message)
		}
	case *corev1.Pod:
		o.Spec = corev1.PodSpec{}
		o.Status = corev1.PodStatus{Phase: o.Status.Phase}
		o.Annotations = nil
	case *workflowv1alpha1.WorkflowTask:
		if readRecord(o).JobCreated {
			o.Spec.Template = corev1.PodTemplateSpec{}
		}
		for i := range o.Status.Conditions {
			c := &o.Status.Conditions[i]
			c.Type, c.Status = intern(c.Type), metav1.ConditionStatus(intern(string(c.Status)))
			c.Reason, c.Message = intern(c.Reason), intern(c.Message)
		}
	}
	return obj, nil
}

// internMeta interns the metadata strings that many cached objects repeat.
func internMeta(o client.Object) {
	o.SetNamespace(intern(o.GetNamespace()))
	if l := o.GetLabels(); len(l) > 0 {
		interned := make(map[string]string, len(l))
		for k, v := range l {
			interned[intern(k)] = intern(v)
		}
		o.SetLabels(interned)
	}
	refs := o.GetOwnerReferences()
	for i := range refs {
		refs[i].APIVersion, refs[i].Kind = intern(refs[i].APIVersion), intern(refs[i].Kind)
	}
}

// intern returns the one copy of s that every interned equal string shares (kept while any
// cached object holds it).
func intern(s string) string { return unique.Make(s).Value() }
