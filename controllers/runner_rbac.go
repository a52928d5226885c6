package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apilabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// runnerName names a task's runner ServiceAccount, Role and RoleBinding.
func runnerName(task *workflowv1alpha1.WorkflowTask) string { return task.Name + "-runner" }

// runnerRules is all a task's pods may do: read and patch the status of their own task. No
// list, no watch, no spec, no other task.
func runnerRules(task *workflowv1alpha1.WorkflowTask) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{
		APIGroups:     []string{workflowv1alpha1.GroupVersion.Group},
		Resources:     []string{"workflowtasks/status"},
		ResourceNames: []string{task.Name},
		Verbs:         []string{"get", "patch"},
	}}
}

// reconcileRunnerIdentity creates a task's runner identity (a ServiceAccount, a Role with
// runnerRules, the RoleBinding between them, all owned by the task so garbage collection removes
// them with it) and puts back whatever was changed in it. A finished or canceled task needs
// none and gets nothing done.
func (r *WorkflowTaskReconciler) reconcileRunnerIdentity(ctx context.Context, task *workflowv1alpha1.WorkflowTask) error {
	if task.Status.Phase.IsFinished() || isCancelRequested(task) {
		return nil
	}
	key := metav1.ObjectMeta{Name: runnerName(task), Namespace: task.Namespace}
	sa := &corev1.ServiceAccount{ObjectMeta: key}
	role := &rbacv1.Role{ObjectMeta: key}
	binding := &rbacv1.RoleBinding{ObjectMeta: key}
	desired := map[client.Object]func(){
		sa:   func() {},
		role: func() { role.Rules = runnerRules(task) },
		binding: func() {
			binding.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}
			binding.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}
		},
	}
	for _, obj := range []client.Object{sa, role, binding} {
		_, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
			obj.SetLabels(apilabels.Merge(obj.GetLabels(), labelsFor(task)))
			desired[obj]()
			return controllerutil.SetControllerReference(task, obj, r.Scheme)
		})
		if err != nil {
			return fmt.Errorf("reconciling runner %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}
