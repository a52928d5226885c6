package controller_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// runnerClient is a client with a real token (TokenRequest) of the task's runner
// ServiceAccount: what the task's pods hold.
func runnerClient(t *testing.T, task *workflowv1alpha1.WorkflowTask) client.Client {
	t.Helper()
	token, err := testenv.Token(context.Background(), adminCfg, task.Namespace, task.Name+"-runner")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(testenv.BearerConfig(adminCfg, token), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The attack of a hostile pod, as a status merge patch with its runner token.
const forgedFinish = `{"status":{"phase":"Completed","completionTime":"2000-01-01T00:00:00Z","startTime":"2999-01-01T00:00:00Z",
  "conditions":[{"type":"Ready","status":"True","reason":"Forged","message":"done, trust me","lastTransitionTime":"2000-01-01T00:00:00Z"},
                {"type":"Reconciling","status":"False","reason":"Forged","message":"x","lastTransitionTime":"2000-01-01T00:00:00Z"},
                {"type":"Approved","status":"True","reason":"Forged","message":"x","lastTransitionTime":"2000-01-01T00:00:00Z"}]}}`

// Without the status admission policy (this suite installs none), a pod that forges a finished
// status is not believed: the controller restores the phase, the times and the conditions from
// its own record and the Job, says so in a StatusCorrected event, keeps managing the Job, and
// the TTL (0 s here: delete at once when finished) does not fire.
func TestForgedStatusIsCorrectedWithoutPolicy(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("forged", ns).TTLSecondsAfterFinished(0))
	job := waitJob(t, task)
	runJob(t, job)
	running := waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
	start := running.Status.StartTime

	runner := runnerClient(t, task)
	gomega.NewWithT(t).Eventually(func() error {
		return runner.Status().Patch(ctx, running.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(forgedFinish)))
	}).Should(gomega.Succeed(), "without the policy the API server accepts the forged status")

	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, task)
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseProcessing))
		g.Expect(got.Status.CompletionTime).To(gomega.BeNil())
		g.Expect(got.Status.StartTime.Equal(start)).To(gomega.BeTrue(), "startTime %v restored to %v", got.Status.StartTime, start)
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionReady)).To(gomega.BeFalse())
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionReconciling)).To(gomega.BeTrue())
		g.Expect(meta.FindStatusCondition(got.Status.Conditions, "Approved")).To(gomega.BeNil())
		g.Expect(eventReasons(g, task)).To(gomega.ContainElement(controllers.EventStatusCorrected))
	}).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		got := getTask(g, task)
		g.Expect(got.DeletionTimestamp).To(gomega.BeNil(), "deleted early by a forged completionTime")
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseProcessing))
		current := &batchv1.Job{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), current)).To(gomega.Succeed())
		g.Expect(current.DeletionTimestamp).To(gomega.BeNil())
	}).Should(gomega.Succeed())

	// The real end still counts: completed, then deleted by its TTL.
	completeJob(t, job)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), &workflowv1alpha1.WorkflowTask{}))
	}).Should(gomega.BeTrue(), "deleted by its TTL once really finished")
}

// A finished task's runner loses its access, but only once no pod of the task can still be
// running (a stopping pod's last progress write lands): the RoleBinding goes, and a token of
// the task's pods gets 403.
func TestRunnerAccessEndsWithTheTask(t *testing.T) {
	ctx := context.Background()
	cases := map[string]struct {
		// podsStopping brings the Job to where the task is finished but pods may still run.
		podsStopping func(t *testing.T, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job)
		// podsGone brings it to where none can.
		podsGone func(t *testing.T, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job)
		phase    workflowv1alpha1.TaskPhase
	}{
		"completed": {
			podsStopping: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				updateJobStatus(t, job, func(s *batchv1.JobStatus) {
					s.Conditions = append(s.Conditions, testutil.JobConditionNow(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonCompletionsReached, "ok"))
				})
			},
			podsGone: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				updateJobStatus(t, job, func(s *batchv1.JobStatus) {
					s.Active, s.Ready, s.Succeeded, s.CompletionTime = 0, ptr.To[int32](0), 1, ptr.To(metav1.Now())
					s.Conditions = append(s.Conditions, testutil.JobConditionNow(batchv1.JobComplete, batchv1.JobReasonCompletionsReached, "ok"))
				})
			},
			phase: workflowv1alpha1.TaskPhaseCompleted,
		},
		"error": {
			podsStopping: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				updateJobStatus(t, job, func(s *batchv1.JobStatus) {
					s.Conditions = append(s.Conditions, testutil.JobConditionNow(batchv1.JobFailureTarget, batchv1.JobReasonBackoffLimitExceeded, "backoff"))
				})
			},
			podsGone: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				updateJobStatus(t, job, func(s *batchv1.JobStatus) {
					s.Active, s.Ready, s.Failed = 0, ptr.To[int32](0), 1
					s.Conditions = append(s.Conditions, testutil.JobConditionNow(batchv1.JobFailed, batchv1.JobReasonBackoffLimitExceeded, "backoff"))
				})
			},
			phase: workflowv1alpha1.TaskPhaseError,
		},
		"canceled": {
			podsStopping: func(t *testing.T, task *workflowv1alpha1.WorkflowTask, _ *batchv1.Job) {
				patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Cancel = ptr.To(true) })
			},
			podsGone: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) { collectForeground(t, job) },
			phase:    workflowv1alpha1.TaskPhaseCanceled,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			task := createTask(t, testutil.MakeTask("ends", ns))
			job := waitJob(t, task)
			runJob(t, job)
			waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
			runner := runnerClient(t, task)
			g := gomega.NewWithT(t)
			g.Eventually(func() error { return writeProgress(ctx, runner, task, "pod-0", progress("upload", 1, 10)) }).Should(gomega.Succeed())

			tc.podsStopping(t, task, job)
			waitPhase(t, task, tc.phase)
			g.Consistently(func() error {
				return writeProgress(ctx, runner, task, "pod-0", progress("upload", 9, 10))
			}, time.Second).Should(gomega.Succeed(), "a stopping pod's last write lands")

			tc.podsGone(t, task, job)
			binding := &rbacv1.RoleBinding{}
			g.Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ends-runner"}, binding))
			}).Should(gomega.BeTrue(), "runner RoleBinding removed")
			// kube-apiserver's RBAC authorizer sees the binding's removal through its own informer, so
			// a write may still land just after the binding is gone: probe with the value already
			// stored, and send a different value only once the probe is refused.
			g.Eventually(func() bool {
				return apierrors.IsForbidden(writeProgress(ctx, runner, task, "pod-0", progress("upload", 9, 10)))
			}).Should(gomega.BeTrue(), "a finished task's runner token may write no more")
			g.Expect(writeProgress(ctx, runner, task, "pod-0", progress("upload", 10, 10))).To(
				gomega.Satisfy(apierrors.IsForbidden), "once refused, refused for good")
			for _, obj := range []client.Object{&corev1.ServiceAccount{}, &rbacv1.Role{}} {
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ends-runner"}, obj)).To(gomega.Succeed(), "%T stays", obj)
			}
			got := getTask(g, task)
			g.Expect(got.Status.Progress).To(gomega.HaveLen(1))
			g.Expect(got.Status.Progress[0].Current).To(gomega.Equal(int64(9)), "the last write before the end is kept")
		})
	}
}

// An object named like the task's runner identity that the operator did not create is never
// taken over: the task shows Stalled=True/RunnerConflict naming it (not Reconciling=True too),
// no Job is created, and once the object is removed the task proceeds.
func TestRunnerConflict(t *testing.T) {
	ctx := context.Background()
	foreign := map[string]func(ns string) client.Object{
		"ServiceAccount": func(ns string) client.Object {
			return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "clash-runner", Namespace: ns}}
		},
		"Role": func(ns string) client.Object {
			return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "clash-runner", Namespace: ns},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}}
		},
		// Labeled as ours, so the operator's cache sees it; still not created for this task.
		"RoleBinding": func(ns string) client.Object {
			return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "clash-runner", Namespace: ns,
				Labels: map[string]string{workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue}},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "clash-runner", Namespace: ns}}}
		},
	}
	for kind, make := range foreign {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			obj := make(ns)
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			task := createTask(t, testutil.MakeTask("clash", ns))
			g := gomega.NewWithT(t)
			g.Eventually(func(g gomega.Gomega) {
				got := getTask(g, task)
				stalled := meta.FindStatusCondition(got.Status.Conditions, workflowv1alpha1.ConditionStalled)
				g.Expect(stalled).NotTo(gomega.BeNil())
				g.Expect(stalled.Status).To(gomega.Equal(metav1.ConditionTrue))
				g.Expect(stalled.Reason).To(gomega.Equal(workflowv1alpha1.ReasonRunnerConflict))
				g.Expect(stalled.Message).To(gomega.ContainSubstring(kind + " " + ns + "/clash-runner"))
				g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionReconciling)).To(gomega.BeFalse())
				g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseQueued))
			}).Should(gomega.Succeed())
			g.Consistently(func(g gomega.Gomega) {
				err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "clash"}, &batchv1.Job{})
				g.Expect(apierrors.IsNotFound(err)).To(gomega.BeTrue(), "no Job may run as an identity the operator does not control")
				cur := obj.DeepCopyObject().(client.Object)
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), cur)).To(gomega.Succeed())
				g.Expect(cur.GetOwnerReferences()).To(gomega.BeEmpty(), "taken over")
			}).Should(gomega.Succeed())

			g.Expect(k8sClient.Delete(ctx, obj)).To(gomega.Succeed())
			waitJob(t, task)
			g.Eventually(func(g gomega.Gomega) {
				got := getTask(g, task)
				g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionStalled)).To(gomega.BeFalse())
			}).Should(gomega.Succeed())
		})
	}
}

// Progress written with a plain `kubectl patch --subresource=status` has no updateTime: it is
// accepted, and stall detection counts from when the controller first saw each value.
func TestProgressWithoutUpdateTime(t *testing.T) {
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("scripted", ns).ProgressDeadlineSeconds(3))
	job := waitJob(t, task)
	runJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectlPatch := func(current int) {
		t.Helper()
		patch := `{"status":{"progress":[{"type":"upload_count","current":` + strings.TrimSpace(string(rune('0'+current))) + `,"total":9}]}}`
		out, err := exec.Command(env.ControlPlane.KubectlPath, "--kubeconfig", kubeconfig, "-n", ns, "patch", "workflowtask", "scripted",
			"--subresource=status", "--type=merge", "-p", patch).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl patch: %v\n%s", err, out)
		}
	}
	kubectlPatch(1)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, task)
		g.Expect(got.Status.Progress).To(gomega.HaveLen(1))
		g.Expect(got.Status.Progress[0].UpdateTime).To(gomega.BeNil())
		g.Expect(got.Status.ProgressSummary).To(gomega.Equal("1/9"))
	}).Should(gomega.Succeed())
	stalled := func(g gomega.Gomega) bool {
		c := meta.FindStatusCondition(getTask(g, task).Status.Conditions, workflowv1alpha1.ConditionStalled)
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == workflowv1alpha1.ReasonProgressDeadlineExceeded
	}
	g.Eventually(stalled).Should(gomega.BeTrue(), "the same value for longer than the deadline stalls")
	kubectlPatch(2)
	g.Eventually(stalled).Should(gomega.BeFalse(), "a new value counts as progress")
}

// A task deleted and re-created under the same name (a GitOps tool replacing it) may meet the
// earlier task's Job and runner objects before garbage collection removed them: the new task
// waits for them (Reconciling=True/ReconcileError naming the object), neither takes them over
// nor ends in Error, and proceeds once they are gone. (envtest runs no garbage collector: the
// test removes them as it would.)
func TestEarlierTaskOfTheSameName(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	first := createTask(t, testutil.MakeTask("again", ns))
	waitJob(t, first)
	waitPhase(t, first, workflowv1alpha1.TaskPhaseQueued)
	// Deleted with its dependents left behind (as the garbage collector has not run yet).
	if err := k8sClient.Delete(ctx, first, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	second := createTask(t, testutil.MakeTask("again", ns))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, second)
		rec := meta.FindStatusCondition(got.Status.Conditions, workflowv1alpha1.ConditionReconciling)
		g.Expect(rec).NotTo(gomega.BeNil())
		g.Expect(rec.Reason).To(gomega.Equal(workflowv1alpha1.ReasonReconcileError))
		g.Expect(rec.Message).To(gomega.ContainSubstring("earlier task of the same name"))
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseQueued))
	}).Should(gomega.Succeed())

	for _, obj := range []client.Object{&batchv1.Job{}, &rbacv1.RoleBinding{}, &rbacv1.Role{}, &corev1.ServiceAccount{}} {
		name := "again-runner"
		if _, ok := obj.(*batchv1.Job); ok {
			name = "again"
		}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)).To(gomega.Succeed())
		g.Expect(metav1.GetControllerOf(obj).UID).To(gomega.Equal(first.UID), "%T taken over", obj)
		g.Expect(k8sClient.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(gomega.Succeed())
	}
	job := waitJob(t, second)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), job)).To(gomega.Succeed())
		g.Expect(metav1.IsControlledBy(job, second)).To(gomega.BeTrue())
	}).Should(gomega.Succeed())
	waitPhase(t, second, workflowv1alpha1.TaskPhaseQueued)
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, second)
		g.Expect(meta.FindStatusCondition(got.Status.Conditions, workflowv1alpha1.ConditionReconciling).Reason).To(gomega.Equal(workflowv1alpha1.ReasonQueued))
	}).Should(gomega.Succeed())
}
