package controller_test

import (
	"context"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// Queued → Processing → Completed, with the Job, the runner identity, times, ID, conditions and
// events along the way.
func TestLifecycleCompleted(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("upload", ns).BackoffLimit(3).ActiveDeadlineSeconds(600))

	queued := waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued)
	if want := workflowv1alpha1.TaskIDFromUID(task.UID); queued.Status.ID != want {
		t.Errorf("status.id = %q, want %q", queued.Status.ID, want)
	}
	if c := condition(t, queued, workflowv1alpha1.ConditionReconciling); c.Status != metav1.ConditionTrue {
		t.Errorf("Reconciling = %+v", c)
	}

	job := waitJob(t, task)
	if !metav1.IsControlledBy(job, task) || *job.Spec.BackoffLimit != 3 || *job.Spec.ActiveDeadlineSeconds != 600 {
		t.Errorf("job not built from the task: owners %+v spec %+v", job.OwnerReferences, job.Spec)
	}
	if job.Spec.Template.Spec.ServiceAccountName != "upload-runner" {
		t.Errorf("job runs as %q", job.Spec.Template.Spec.ServiceAccountName)
	}
	for _, obj := range []client.Object{&corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "upload-runner"}, obj); err != nil {
			t.Fatalf("runner %T: %v", obj, err)
		}
		if !metav1.IsControlledBy(obj, task) {
			t.Errorf("runner %T is not owned by the task (garbage collection would not remove it): %+v", obj, obj.GetOwnerReferences())
		}
	}

	runJob(t, job)
	running := waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
	if running.Status.StartTime == nil {
		t.Error("startTime not set when processing")
	}

	if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload_count", 25, 34)); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(getTask(g, task).Status.ProgressSummary).To(gomega.Equal("25/34"))
	}).Should(gomega.Succeed())
	// A burst of progress writes: the summary is paced (one write per SummaryInterval), and the
	// last value lands without any further event.
	for i := int64(26); i <= 30; i++ {
		if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload_count", i, 34)); err != nil {
			t.Fatal(err)
		}
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(getTask(g, task).Status.ProgressSummary).To(gomega.Equal("30/34"))
	}).Should(gomega.Succeed())

	completeJob(t, job)
	done := waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	if done.Status.CompletionTime == nil {
		t.Error("completionTime not set")
	}
	for typ, want := range map[string]metav1.ConditionStatus{
		workflowv1alpha1.ConditionReady: metav1.ConditionTrue, workflowv1alpha1.ConditionReconciling: metav1.ConditionFalse,
		workflowv1alpha1.ConditionStalled: metav1.ConditionFalse,
	} {
		if c := condition(t, done, typ); c.Status != want || c.ObservedGeneration != done.Generation {
			t.Errorf("%s = %+v, want %s at generation %d", typ, c, want, done.Generation)
		}
	}
	if got := done.Status.Progress; len(got) != 1 || got[0].Current != 30 {
		t.Errorf("progress lost: %+v", got)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(eventReasons(g, task)).To(gomega.ContainElements("JobCreated", "Processing", "Completed"))
	}).Should(gomega.Succeed())
}

func TestLifecycleFailed(t *testing.T) {
	cases := map[string]struct {
		jobReason, wantReason string
	}{
		"backoff limit":     {batchv1.JobReasonBackoffLimitExceeded, workflowv1alpha1.ReasonJobFailed},
		"deadline exceeded": {batchv1.JobReasonDeadlineExceeded, workflowv1alpha1.ReasonDeadlineExceeded},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ns := newNamespace(t)
			task := createTask(t, testutil.MakeTask("fails", ns))
			job := waitJob(t, task)
			runJob(t, job)
			waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
			failJob(t, job, tc.jobReason, "the Job controller's words")
			failed := waitPhase(t, task, workflowv1alpha1.TaskPhaseError)
			for _, typ := range []string{workflowv1alpha1.ConditionStalled, workflowv1alpha1.ConditionFailed} {
				c := condition(t, failed, typ)
				if c.Status != metav1.ConditionTrue || c.Reason != tc.wantReason || !strings.Contains(c.Message, "the Job controller's words") {
					t.Errorf("%s = %+v", typ, c)
				}
			}
			gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
				g.Expect(eventReasons(g, task)).To(gomega.ContainElement("Failed"))
			}).Should(gomega.Succeed())
		})
	}
}

// Cancel deletes the Job and keeps the task with its last progress.
func TestCancel(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("cancel-me", ns))
	job := waitJob(t, task)
	runJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
	if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload", 512, 1024)); err != nil {
		t.Fatal(err)
	}

	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Cancel = ptr.To(true) })
	canceled := waitPhase(t, task, workflowv1alpha1.TaskPhaseCanceled)
	if c := condition(t, canceled, workflowv1alpha1.ConditionCanceled); c.Status != metav1.ConditionTrue {
		t.Errorf("Canceled = %+v", c)
	}
	if p := canceled.Status.Progress; len(p) != 1 || p[0].Current != 512 {
		t.Errorf("last progress not kept: %+v", p)
	}
	if canceled.Status.CompletionTime == nil {
		t.Error("completionTime not set on cancel")
	}
	collectForeground(t, job)
	gomega.NewWithT(t).Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), &batchv1.Job{}))
	}).Should(gomega.BeTrue(), "the Job of a canceled task is deleted")
}

// Suspend passes to the Job and back; the task shows Suspending in between.
func TestSuspendResume(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("pausable", ns))
	job := waitJob(t, task)
	runJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Suspend = ptr.To(true) })
	suspended := waitPhase(t, task, workflowv1alpha1.TaskPhaseSuspending)
	if c := condition(t, suspended, workflowv1alpha1.ConditionSuspended); c.Status != metav1.ConditionTrue {
		t.Errorf("Suspended = %+v", c)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), job)).To(gomega.Succeed())
		g.Expect(ptr.Deref(job.Spec.Suspend, false)).To(gomega.BeTrue())
	}).Should(gomega.Succeed())

	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Suspend = ptr.To(false) })
	resumed := waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
	if c := condition(t, resumed, workflowv1alpha1.ConditionSuspended); c.Status != metav1.ConditionFalse || c.Reason != workflowv1alpha1.ReasonResumed {
		t.Errorf("Suspended after resume = %+v", c)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), job)).To(gomega.Succeed())
		g.Expect(ptr.Deref(job.Spec.Suspend, true)).To(gomega.BeFalse())
		g.Expect(eventReasons(g, task)).To(gomega.ContainElements("Suspended", "Resumed"))
	}).Should(gomega.Succeed())
}

// A task created suspended gets a suspended Job and never shows Queued work.
func TestCreatedSuspended(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("held", ns).Suspend(true))
	waitPhase(t, task, workflowv1alpha1.TaskPhaseSuspending)
	if job := waitJob(t, task); !ptr.Deref(job.Spec.Suspend, false) {
		t.Errorf("job of a suspended task is not suspended")
	}
}

// The Job deleted by someone else while the task runs: Error with a clear message, no re-run.
func TestJobDeletedUnderTask(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("orphaned", ns))
	job := waitJob(t, task)
	runJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	if err := k8sClient.Delete(context.Background(), job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	failed := waitPhase(t, task, workflowv1alpha1.TaskPhaseError)
	if c := condition(t, failed, workflowv1alpha1.ConditionFailed); c.Reason != workflowv1alpha1.ReasonJobDeleted || !strings.Contains(c.Message, "deleted") {
		t.Errorf("Failed = %+v", c)
	}
	gomega.NewWithT(t).Consistently(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), &batchv1.Job{}))
	}).Should(gomega.BeTrue(), "no second Job is started")
}

// A template the API server refuses as a Job ends the task in Error, naming the problem.
func TestInvalidTemplate(t *testing.T) {
	ns := newNamespace(t)
	w := testutil.MakeTask("bad", ns)
	w.Spec.Template.Spec.Containers[0].Name = "" // the CRD schema allows it; the Job's validation does not
	task := createTask(t, w)
	failed := waitPhase(t, task, workflowv1alpha1.TaskPhaseError)
	if c := condition(t, failed, workflowv1alpha1.ConditionFailed); c.Reason != "JobInvalid" || !strings.Contains(c.Message, "containers[0].name") {
		t.Errorf("Failed = %+v", c)
	}
}

// A Job of the same name that is not the task's is never adopted or overwritten.
func TestForeignJobIsNotAdopted(t *testing.T) {
	ns := newNamespace(t)
	foreign := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "x"}},
		}}},
	}
	if err := k8sClient.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	task := createTask(t, testutil.MakeTask("taken", ns))
	failed := waitPhase(t, task, workflowv1alpha1.TaskPhaseError)
	if c := condition(t, failed, workflowv1alpha1.ConditionFailed); c.Reason != "JobConflict" {
		t.Errorf("Failed = %+v", c)
	}
	got := &batchv1.Job{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(foreign), got); err != nil || len(got.OwnerReferences) != 0 {
		t.Errorf("foreign Job touched: %v %+v", err, got.OwnerReferences)
	}
}

func patchSpec(t *testing.T, task *workflowv1alpha1.WorkflowTask, mutate func(*workflowv1alpha1.WorkflowTaskSpec)) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func() error {
		cur := &workflowv1alpha1.WorkflowTask{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), cur); err != nil {
			return err
		}
		mutate(&cur.Spec)
		return k8sClient.Update(context.Background(), cur)
	}).Should(gomega.Succeed())
}

// A task asking for the progress-file sidecar gets a Job the API server accepts, with the
// sidecar as a native sidecar (restartPolicy Always) first among its init containers.
func TestProgressSidecarJobIsAccepted(t *testing.T) {
	ns := newNamespace(t)
	w := testutil.MakeTask("with-sidecar", ns)
	w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{Image: "registry.example/workflowtask-operator:v1"}
	task := createTask(t, w)
	job := waitJob(t, task)
	init := job.Spec.Template.Spec.InitContainers
	if len(init) != 1 || init[0].Name != workflowv1alpha1.ProgressSidecarName || ptr.Deref(init[0].RestartPolicy, "") != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("init containers = %+v", init)
	}
	waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued)
}
