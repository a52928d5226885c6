package controller_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	wfprogress "github.com/taskops/workflowtask-operator/pkg/progress"
)

var nsCounter atomic.Int32

// newNamespace creates a namespace of its own for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := testutil.NamespaceName("ctrl", nsCounter.Add(1), t.Name())
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// createTask creates the task and returns it as stored.
func createTask(t *testing.T, w *testutil.TaskWrapper) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	task := w.Obj()
	if err := k8sClient.Create(context.Background(), task); err != nil {
		t.Fatalf("creating task: %v", err)
	}
	return task
}

func getTask(g gomega.Gomega, task *workflowv1alpha1.WorkflowTask) *workflowv1alpha1.WorkflowTask {
	got := &workflowv1alpha1.WorkflowTask{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
	return got
}

// waitPhase waits for the task to reach phase and returns it.
func waitPhase(t *testing.T, task *workflowv1alpha1.WorkflowTask, phase workflowv1alpha1.TaskPhase) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	var got *workflowv1alpha1.WorkflowTask
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got = getTask(g, task)
		g.Expect(got.Status.Phase).To(gomega.Equal(phase))
		g.Expect(got.Status.ObservedGeneration).To(gomega.Equal(got.Generation))
	}).Should(gomega.Succeed())
	return got
}

// condition returns the task's condition of type t (or fails).
func condition(t *testing.T, task *workflowv1alpha1.WorkflowTask, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(task.Status.Conditions, typ)
	if c == nil {
		t.Fatalf("task has no %s condition: %+v", typ, task.Status.Conditions)
	}
	return *c
}

// waitJob waits for the task's Job and returns it.
func waitJob(t *testing.T, task *workflowv1alpha1.WorkflowTask) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	gomega.NewWithT(t).Eventually(func() error {
		return k8sClient.Get(context.Background(), client.ObjectKey{Namespace: task.Namespace, Name: task.Name}, job)
	}).Should(gomega.Succeed())
	return job
}

// updateJobStatus changes the Job's status as the Job controller would.
func updateJobStatus(t *testing.T, job *batchv1.Job, mutate func(*batchv1.JobStatus)) {
	t.Helper()
	testenv.UpdateJobStatus(t, k8sClient, job, mutate)
}

// runJob: one pod of the Job is running and ready.
func runJob(t *testing.T, job *batchv1.Job) {
	updateJobStatus(t, job, func(s *batchv1.JobStatus) {
		if s.StartTime == nil {
			s.StartTime = ptr.To(metav1.Now())
		}
		s.Active, s.Ready = 1, ptr.To[int32](1)
	})
}

// completeJob: the pod succeeded; SuccessCriteriaMet, then Complete (Kubernetes 1.37's order).
func completeJob(t *testing.T, job *batchv1.Job) {
	for _, step := range testutil.CompletionSteps() {
		updateJobStatus(t, job, step)
	}
}

// failJob: FailureTarget, then Failed, with the Job controller's reason.
func failJob(t *testing.T, job *batchv1.Job, reason, message string) {
	for _, step := range testutil.FailureSteps(reason, message) {
		updateJobStatus(t, job, step)
	}
}

// writeProgress writes progress entries as a job pod's reporter does: server-side apply on the
// status subresource with a field manager of its own.
func writeProgress(ctx context.Context, c client.Client, task *workflowv1alpha1.WorkflowTask, manager string, entries ...workflowv1alpha1.ProgressEntry) error {
	body, err := wfprogress.ApplyBody(task.Namespace, task.Name, "", "", entries)
	if err != nil {
		return err
	}
	return c.Status().Patch(ctx, task.DeepCopy(), client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(manager), client.ForceOwnership)
}

func progress(typ string, current, total int64) workflowv1alpha1.ProgressEntry {
	return workflowv1alpha1.ProgressEntry{Type: typ, Current: current, Total: total, UpdateTime: ptr.To(metav1.NewMicroTime(time.Now()))}
}

// eventReasons lists the reasons of the events recorded on the task, oldest first.
func eventReasons(g gomega.Gomega, task *workflowv1alpha1.WorkflowTask) []string {
	list := &eventsv1.EventList{}
	g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(task.Namespace))).To(gomega.Succeed())
	var reasons []string
	for _, e := range list.Items {
		if e.Regarding.UID == task.UID {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

// collectForeground waits until the Job is being deleted in the foreground (its pods first) and
// then does what the garbage collector does once the pods are gone: it removes the finalizer,
// and the Job goes. (envtest runs no garbage collector.)
func collectForeground(t *testing.T, job *batchv1.Job) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got := &batchv1.Job{}
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), got)).To(gomega.Succeed())
		g.Expect(got.DeletionTimestamp).NotTo(gomega.BeNil(), "the Job is being deleted")
		g.Expect(got.Finalizers).To(gomega.ContainElement(metav1.FinalizerDeleteDependents), "in the foreground: pods first")
		got.Finalizers = nil
		g.Expect(k8sClient.Update(context.Background(), got)).To(gomega.Succeed())
	}).Should(gomega.Succeed())
}
