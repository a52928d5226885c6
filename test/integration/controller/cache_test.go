package controller_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The manager's cache (which the controller and the endpoint read) holds tasks and Jobs without
// their managedFields — an entry per writer, growing with every reporter pod — and, once the Job
// exists, without their pod templates, while the API server keeps them all; the controller goes
// on through the task's life (suspend, resume, completion) from the trimmed copies.
func TestCacheIsTrimmed(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("cached", ns))
	waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued)
	ctx := context.Background()
	key := client.ObjectKeyFromObject(task)
	template := func(obj client.Object) []corev1.Container {
		switch o := obj.(type) {
		case *workflowv1alpha1.WorkflowTask:
			return o.Spec.Template.Spec.Containers
		case *batchv1.Job:
			return o.Spec.Template.Spec.Containers
		}
		return nil
	}
	for _, obj := range []client.Object{&workflowv1alpha1.WorkflowTask{}, &batchv1.Job{}} {
		if err := k8sClient.Get(ctx, key, obj); err != nil {
			t.Fatal(err)
		}
		if len(obj.GetManagedFields()) == 0 || len(template(obj)) == 0 {
			t.Fatalf("%T from the API server has no managedFields or template: nothing to check", obj)
		}
		gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
			g.Expect(mgr.GetCache().Get(ctx, key, obj)).To(gomega.Succeed())
			g.Expect(obj.GetManagedFields()).To(gomega.BeEmpty(), "%T in the cache", obj)
			g.Expect(template(obj)).To(gomega.BeEmpty(), "%T's template in the cache", obj)
		}).Should(gomega.Succeed())
	}

	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Suspend = ptr.To(true) })
	job := waitJob(t, task)
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, key, job)).To(gomega.Succeed())
		g.Expect(*job.Spec.Suspend).To(gomega.BeTrue())
		g.Expect(job.Spec.Template.Spec.Containers).To(gomega.HaveLen(1), "the Job patched from a trimmed copy kept its template")
	}).Should(gomega.Succeed())
	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Suspend = ptr.To(false) })
	runJob(t, job)
	completeJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	got := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(ctx, key, got); err != nil || len(got.Spec.Template.Spec.Containers) != 1 {
		t.Errorf("the task's template after its life from a trimmed cache: %v %+v", err, got.Spec.Template.Spec.Containers)
	}
}
