package controller_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

const manifest = `
apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: from-git
spec:
  type: relocate
  owner: alice
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: registry.k8s.io/e2e-test-images/busybox:1.36
`

// apply server-side applies the manifest as a GitOps tool does (field manager "argocd").
func apply(t *testing.T, ns string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	if err := k8sClient.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("argocd"), client.ForceOwnership); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return u
}

// Re-applying an unchanged manifest changes nothing, while running and after completion, and
// never starts a second Job, even when the first is gone.
func TestReapplyIsIdempotent(t *testing.T) {
	ns := newNamespace(t)
	first := apply(t, ns)
	task := &workflowv1alpha1.WorkflowTask{ObjectMeta: metav1.ObjectMeta{Name: first.GetName(), Namespace: ns, UID: first.GetUID()}}
	job := waitJob(t, task)
	runJob(t, job)
	running := waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	if again := apply(t, ns); again.GetResourceVersion() != running.ResourceVersion || again.GetGeneration() != running.Generation {
		t.Errorf("re-apply while running changed the task: rv %s→%s gen %d→%d",
			running.ResourceVersion, again.GetResourceVersion(), running.Generation, again.GetGeneration())
	}

	completeJob(t, job)
	done := waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	// The finished Job is cleaned up (by its own TTL, or by hand): the task must not re-run.
	if err := k8sClient.Delete(context.Background(), job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	if again := apply(t, ns); again.GetResourceVersion() != done.ResourceVersion {
		t.Errorf("re-apply after completion changed the task: rv %s→%s", done.ResourceVersion, again.GetResourceVersion())
	}
	g := gomega.NewWithT(t)
	g.Consistently(func(g gomega.Gomega) {
		g.Expect(apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(gomega.BeTrue())
		g.Expect(getTask(g, task).Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseCompleted))
	}).Should(gomega.Succeed(), "no second Job, phase stays Completed")
}

// Changing an immutable field through a GitOps re-apply is refused, naming the field.
func TestReapplyChangingImmutableFieldIsRefused(t *testing.T) {
	ns := newNamespace(t)
	u := apply(t, ns)
	if err := unstructured.SetNestedField(u.Object, "mallory", "spec", "owner"); err != nil {
		t.Fatal(err)
	}
	u.SetManagedFields(nil)
	u.SetResourceVersion("")
	err := k8sClient.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("argocd"), client.ForceOwnership)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v, want Invalid", err)
	}
	gomega.NewWithT(t).Expect(err.Error()).To(gomega.And(gomega.ContainSubstring("spec.owner"), gomega.ContainSubstring("owner is immutable")))
}
