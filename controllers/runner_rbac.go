package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apilabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// runnerName names a task's runner ServiceAccount, Role and RoleBinding.
func runnerName(task *workflowv1alpha1.WorkflowTask) string { return task.Name + "-runner" }

// runnerRules is all a task's pods may do: read and patch the status of their own task. No
// list, no watch, no spec, no other task. (What they may change in that status, progress
// only, is the admission policy's part: config/admission.)
func runnerRules(task *workflowv1alpha1.WorkflowTask) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{
		APIGroups:     []string{workflowv1alpha1.GroupVersion.Group},
		Resources:     []string{"workflowtasks/status"},
		ResourceNames: []string{task.Name},
		Verbs:         []string{"get", "patch"},
	}}
}

// runnerConflictError: an object with a runner object's name exists and was not created for
// this task. It is never taken over (its rules or subjects could be anything); the task waits
// until it is removed.
type runnerConflictError struct {
	kind, namespace, name string
}

func (e *runnerConflictError) Error() string {
	return fmt.Sprintf("%s %s/%s exists and was not created for this task; the operator never takes over an object it did not create: delete or rename it and the task proceeds",
		e.kind, e.namespace, e.name)
}

// earlierTaskError: an object the task needs belongs to an earlier task of the same name, deleted
// and being garbage-collected (a GitOps tool deleting and re-creating a task does this). It is
// not a conflict: the reconcile is retried until the object is gone.
type earlierTaskError struct {
	kind, namespace, name string
}

func (e *earlierTaskError) Error() string {
	return fmt.Sprintf("%s %s/%s still belongs to an earlier task of the same name; waiting for garbage collection to remove it",
		e.kind, e.namespace, e.name)
}

// notOurs is the error for an existing object the task does not control: an earlier
// incarnation's (wait), or someone else's (conflict).
func notOurs(obj client.Object, task *workflowv1alpha1.WorkflowTask, kind string) error {
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "WorkflowTask" && ref.Name == task.Name &&
		strings.HasPrefix(ref.APIVersion, workflowv1alpha1.GroupVersion.Group+"/") && ref.UID != task.UID {
		return &earlierTaskError{kind: kind, namespace: obj.GetNamespace(), name: obj.GetName()}
	}
	return &runnerConflictError{kind: kind, namespace: obj.GetNamespace(), name: obj.GetName()}
}

// reconcileRunnerIdentity creates a task's runner identity (a ServiceAccount, a Role with
// runnerRules, the RoleBinding between them, all owned by the task so garbage collection removes
// them with it) and puts back whatever was changed in it. A canceled task gets none. In ingest
// mode the identity is the ServiceAccount alone: the pods push to the operator with a token for
// ingest.Audience and need no RBAC (a Role and RoleBinding a task got earlier in direct mode are
// left to its pods, which write directly, until revokeRunnerAccess removes the binding).
func (r *WorkflowTaskReconciler) reconcileRunnerIdentity(ctx context.Context, task *workflowv1alpha1.WorkflowTask) error {
	if isCancelRequested(task) {
		return nil
	}
	key := metav1.ObjectMeta{Name: runnerName(task), Namespace: task.Namespace}
	sa := &corev1.ServiceAccount{ObjectMeta: key}
	role := &rbacv1.Role{ObjectMeta: key}
	binding := &rbacv1.RoleBinding{ObjectMeta: key}
	runnerObjects := []struct {
		obj     client.Object
		kind    string
		desired func()
	}{
		{sa, "ServiceAccount", func() {}},
		{role, "Role", func() { role.Rules = runnerRules(task) }},
		{binding, "RoleBinding", func() {
			binding.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}
			binding.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}
		}},
	}
	for _, o := range runnerObjects {
		if o.kind != "ServiceAccount" && r.Pods.Ingest != nil {
			continue // ingest mode: no RBAC for the runner
		}
		var foreign error
		_, err := controllerutil.CreateOrUpdate(ctx, r.Client, o.obj, func() error {
			if o.obj.GetResourceVersion() != "" && !metav1.IsControlledBy(o.obj, task) {
				foreign = notOurs(o.obj, task, o.kind)
				return foreign
			}
			o.obj.SetLabels(apilabels.Merge(o.obj.GetLabels(), labelsFor(task)))
			o.desired()
			return controllerutil.SetControllerReference(task, o.obj, r.Scheme)
		})
		if apierrors.IsAlreadyExists(err) {
			// Not in the label-filtered cache: someone else's object, or ours not cached yet.
			foreign, err = r.readForeign(ctx, task, o.obj, o.kind)
		}
		if foreign != nil {
			return foreign
		}
		if err != nil {
			return fmt.Errorf("reconciling runner %s %s: %w", o.kind, o.obj.GetName(), err)
		}
	}
	return nil
}

// readForeign reads an object that exists although the cache does not have it and says whose
// it is: notOurs when the task does not control it; otherwise an error, so the reconcile is
// retried once the cache has caught up.
func (r *WorkflowTaskReconciler) readForeign(ctx context.Context, task *workflowv1alpha1.WorkflowTask, obj client.Object, kind string) (foreign, err error) {
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return nil, fmt.Errorf("reading existing %s %s: %w", kind, obj.GetName(), err)
	}
	if !metav1.IsControlledBy(obj, task) {
		return notOurs(obj, task, kind), nil
	}
	return nil, fmt.Errorf("%s %s exists but is not in the cache yet", kind, obj.GetName())
}

// revokeRunnerAccess ends a finished task's runner access: its RoleBinding is deleted once no
// pod of the task can still be running (the Job finished, or is gone). Until then a terminating
// pod may still make its last progress write. The ServiceAccount and Role stay, owned by the
// task; without the binding their tokens may do nothing.
func (r *WorkflowTaskReconciler) revokeRunnerAccess(ctx context.Context, task *workflowv1alpha1.WorkflowTask, rec taskRecord) error {
	binding := &rbacv1.RoleBinding{}
	err := r.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: runnerName(task)}, binding)
	switch {
	case apierrors.IsNotFound(err):
		return nil // revoked already: nothing more to read
	case err != nil:
		return fmt.Errorf("getting runner RoleBinding: %w", err)
	case !metav1.IsControlledBy(binding, task):
		return nil
	}
	job, err := r.getJob(ctx, task, rec)
	if err != nil {
		return err
	}
	if job != nil && metav1.IsControlledBy(job, task) && !podsGone(job) {
		return nil // the Job's next change wakes the task again
	}
	err = r.Delete(ctx, binding, client.Preconditions{UID: &binding.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting runner RoleBinding %s: %w", binding.Name, err)
	}
	return nil
}
