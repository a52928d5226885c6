package testenv

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
)

// RunningTaskPod is the pod name of task's Job, running as the task's runner: created as the
// Job controller would (envtest runs none; the task's Job is waited for) and marked Running,
// or the pod of that name if there is one already.
func RunningTaskPod(t testing.TB, c client.Client, task *workflowv1alpha1.WorkflowTask, name string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: name}, pod); err == nil {
		return pod
	}
	job := &batchv1.Job{}
	gomega.NewWithT(t).Eventually(func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: task.Name}, job)
	}).Should(gomega.Succeed(), "the controller creates the task's Job")
	pod = &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: task.Namespace, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{ServiceAccountName: task.Name + "-runner", Containers: []corev1.Container{{Name: "work", Image: "worker"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// PodToken is a new token (TokenRequest, as admin) of pod's ServiceAccount bound to the pod, for
// audiences (none: kube-apiserver's own): what the kubelet projects into the pod.
func PodToken(t testing.TB, admin *rest.Config, pod *corev1.Pod, audiences ...string) string {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(admin)
	var token string
	gomega.NewWithT(t).Eventually(func() error {
		var err error
		token, err = kubeauth.Token(context.Background(), cs, pod.Namespace, pod.Spec.ServiceAccountName,
			kubeauth.TokenOptions{Audiences: audiences, BoundTo: kubeauth.BoundToPod(pod)})
		return err
	}).Should(gomega.Succeed(), "a token of the pod's ServiceAccount bound to it")
	return token
}
