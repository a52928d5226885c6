package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// A Processing task with no progress for progressDeadlineSeconds turns Stalled (found by the
// RequeueAfter set for that moment: nothing else changes meanwhile), and clears when progress
// moves again.
func TestStallAndRecovery(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("slow", ns).ProgressDeadlineSeconds(2))
	job := waitJob(t, task)
	runJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	stalledCond := func(g gomega.Gomega) *metav1.Condition {
		c := meta.FindStatusCondition(getTask(g, task).Status.Conditions, workflowv1alpha1.ConditionStalled)
		g.Expect(c).NotTo(gomega.BeNil())
		return c
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		c := stalledCond(g)
		g.Expect(c.Status).To(gomega.Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(gomega.Equal(workflowv1alpha1.ReasonProgressDeadlineExceeded))
		g.Expect(c.Message).To(gomega.ContainSubstring("2s"))
	}).WithTimeout(10 * time.Second).Should(gomega.Succeed())
	if got := getTask(g, task); got.Status.Phase != workflowv1alpha1.TaskPhaseProcessing {
		t.Errorf("a stalled task keeps its phase, got %s", got.Status.Phase)
	}

	if err := writeProgress(ctx, k8sClient, task, "pod-a", progress("upload", 1, 10)); err != nil {
		t.Fatal(err)
	}
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(stalledCond(g).Status).To(gomega.Equal(metav1.ConditionFalse))
	}).Should(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		reasons := strings.Join(eventReasons(g, task), ",")
		g.Expect(reasons).To(gomega.ContainSubstring("ProgressStalled"))
		g.Expect(reasons).To(gomega.ContainSubstring("ProgressResumed"))
	}).Should(gomega.Succeed())

	// And it stalls again once progress stops anew.
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(stalledCond(g).Status).To(gomega.Equal(metav1.ConditionTrue))
	}).WithTimeout(10 * time.Second).Should(gomega.Succeed())
}

// A finished task with ttlSecondsAfterFinished is deleted once it passes; one without is kept.
func TestTTLAfterFinished(t *testing.T) {
	ns := newNamespace(t)
	expiring := createTask(t, testutil.MakeTask("expiring", ns).TTLSecondsAfterFinished(1))
	kept := createTask(t, testutil.MakeTask("kept", ns))
	for _, task := range []*workflowv1alpha1.WorkflowTask{expiring, kept} {
		job := waitJob(t, task)
		runJob(t, job)
		completeJob(t, job)
		waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(expiring), &workflowv1alpha1.WorkflowTask{}))
	}).WithTimeout(10*time.Second).Should(gomega.BeTrue(), "expired task deleted")
	g.Consistently(func() error {
		return k8sClient.Get(context.Background(), client.ObjectKeyFromObject(kept), &workflowv1alpha1.WorkflowTask{})
	}).Should(gomega.Succeed(), "task without TTL kept")
}
