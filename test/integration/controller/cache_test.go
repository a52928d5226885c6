package controller_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The manager's cache (which the controller and the endpoint read) holds tasks and Jobs without
// their managedFields — an entry per writer, growing with every reporter pod — while the API
// server keeps them.
func TestCacheHoldsNoManagedFields(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("cached", ns))
	waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued)
	ctx := context.Background()
	for _, obj := range []client.Object{&workflowv1alpha1.WorkflowTask{}, &batchv1.Job{}} {
		key := client.ObjectKeyFromObject(task)
		if err := k8sClient.Get(ctx, key, obj); err != nil {
			t.Fatal(err)
		}
		if len(obj.GetManagedFields()) == 0 {
			t.Fatalf("%T from the API server has no managedFields: nothing to check", obj)
		}
		gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
			g.Expect(mgr.GetCache().Get(ctx, key, obj)).To(gomega.Succeed())
			g.Expect(obj.GetManagedFields()).To(gomega.BeEmpty(), "%T in the cache", obj)
		}).Should(gomega.Succeed())
	}
}
