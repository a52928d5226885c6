package controller_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The runner ServiceAccount, with a real token, may read and patch its own task's status and
// nothing else.
func TestRunnerRBACBoundaries(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	mine := createTask(t, testutil.MakeTask("mine", ns))
	other := createTask(t, testutil.MakeTask("other", ns))
	waitPhase(t, mine, workflowv1alpha1.TaskPhaseQueued)
	waitPhase(t, other, workflowv1alpha1.TaskPhaseQueued)

	runner := runnerClient(t, mine)

	// Allowed: patch (server-side apply) and get of its own task's status. RBAC is cached by
	// nothing here, but the RoleBinding may be a moment behind the Role: allow a short wait.
	gomega.NewWithT(t).Eventually(func() error {
		return writeProgress(ctx, runner, mine, "runner", progress("upload", 1, 2))
	}).Should(gomega.Succeed())
	got := &workflowv1alpha1.WorkflowTask{}
	if err := runner.SubResource("status").Get(ctx, mine, got); err != nil {
		t.Errorf("get own status: %v", err)
	}

	forbidden := map[string]func() error{
		"patch another task's status": func() error { return writeProgress(ctx, runner, other, "runner", progress("upload", 1, 2)) },
		"get another task's status":   func() error { return runner.SubResource("status").Get(ctx, other, &workflowv1alpha1.WorkflowTask{}) },
		"update its own spec": func() error {
			cur := mine.DeepCopy()
			cur.Spec.Owner = "mallory"
			return runner.Update(ctx, cur)
		},
		"get its own task": func() error {
			return runner.Get(ctx, client.ObjectKeyFromObject(mine), &workflowv1alpha1.WorkflowTask{})
		},
		"list tasks":          func() error { return runner.List(ctx, &workflowv1alpha1.WorkflowTaskList{}, client.InNamespace(ns)) },
		"delete its own task": func() error { return runner.Delete(ctx, mine.DeepCopy()) },
		"widen its own role": func() error {
			role := &rbacv1.Role{}
			role.Name, role.Namespace = "mine-runner", ns
			return runner.Get(ctx, client.ObjectKeyFromObject(role), role)
		},
	}
	for name, call := range forbidden {
		t.Run(name, func(t *testing.T) {
			if err := call(); !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want 403 Forbidden", err)
			}
		})
	}
}

// Tampering with the runner Role is put back by the controller.
func TestRunnerRoleIsRestored(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("guarded", ns))
	waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued)

	role := &rbacv1.Role{}
	key := client.ObjectKey{Namespace: ns, Name: "guarded-runner"}
	if err := k8sClient.Get(ctx, key, role); err != nil {
		t.Fatal(err)
	}
	want := role.Rules
	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}})
	if err := k8sClient.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, key, role)).To(gomega.Succeed())
		g.Expect(role.Rules).To(gomega.Equal(want))
	}).Should(gomega.Succeed())
}
