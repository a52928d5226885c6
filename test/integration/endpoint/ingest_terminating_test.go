package endpoint_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// A pod being deleted still runs until its grace period ends: a canceled task's pod gets SIGTERM
// and its last values come then (the reporter's Close, the progress sidecar's final write). Its
// final push is taken and written; once its phase is terminal, its pushes are refused.
func TestIngestTerminatingPodsFinalPush(t *testing.T) {
	base := ingestEndpoint(t)
	owner := newSAUser(t, "users", "ingest-owner")
	task := createTaskWithProgress(t, testutil.MakeTask("terminating", "ingest").Owner(owner.name))
	ctx := context.Background()
	// Two pods of the task, held by a finalizer once deleted (envtest has no kubelet to end
	// their grace period).
	const hold = "test.taskops.dev/hold"
	pod, token := runningPod(t, task, "terminating-abcde")
	done, doneToken := runningPod(t, task, "terminating-fghij")
	for _, p := range []*corev1.Pod{pod, done} {
		p.Finalizers = append(p.Finalizers, hold)
		if err := k8sClient.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cur := &corev1.Pod{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(p), cur); err == nil {
				cur.Finalizers = nil
				_ = k8sClient.Update(ctx, cur)
			}
		})
	}
	gomega.NewWithT(t).Eventually(func() bool {
		cur := &corev1.Pod{}
		return k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), cur) == nil && cur.DeletionTimestamp != nil
	}).Should(gomega.BeTrue(), "the pod is being deleted")
	// The second pod's containers have ended.
	cur := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(done), cur); err != nil {
		t.Fatal(err)
	}
	cur.Status.Phase = corev1.PodSucceeded
	if err := k8sClient.Status().Update(ctx, cur); err != nil {
		t.Fatal(err)
	}

	httpc := clientFor(t)
	final := ingest.Push{TaskUID: task.UID, Final: true, Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 7, Total: 10, Identifier: "terminated"}}}
	if code := pushTo(t, httpc, base, task.Namespace, task.Name, token, final); code != apiserver.CodeSuccess {
		t.Fatalf("the terminating pod's final push: code %d, want %d", code, apiserver.CodeSuccess)
	}
	gomega.NewWithT(t).Eventually(func() []workflowv1alpha1.ProgressEntry {
		tk := &workflowv1alpha1.WorkflowTask{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(task), tk); err != nil {
			t.Fatal(err)
		}
		return tk.Status.Progress
	}, ingestFlushInterval/2).Should(gomega.ContainElement(gomega.HaveField("Identifier", "terminated")), "the final values written")
	late := ingest.Push{TaskUID: task.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "download", Current: 1, Total: 2}}}
	if code := pushTo(t, httpc, base, task.Namespace, task.Name, doneToken, late); code != apiserver.CodeNoPermission {
		t.Errorf("a finished pod's push: code %d, want %d", code, apiserver.CodeNoPermission)
	}
}
