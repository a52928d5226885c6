package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// storedRecord is the part of the record annotation these tests read.
type storedRecord struct {
	JobCreated     bool         `json:"jobCreated"`
	Phase          string       `json:"phase"`
	Reason         string       `json:"reason"`
	CompletionTime *metav1.Time `json:"completionTime"`
}

// recordOf parses the task's record annotation (failing g when it is missing or unreadable).
func recordOf(g gomega.Gomega, task *workflowv1alpha1.WorkflowTask) storedRecord {
	raw, ok := task.Annotations[workflowv1alpha1.AnnotationRecord]
	g.Expect(ok).To(gomega.BeTrue(), "the task has a record")
	var rec storedRecord
	g.Expect(json.Unmarshal([]byte(raw), &rec)).To(gomega.Succeed(), "the record %q parses", raw)
	return rec
}

// setRecord writes the record annotation as `kubectl annotate --overwrite` does (a merge patch
// of the task); value nil removes it. This suite installs no admission policy, so it lands.
func setRecord(t *testing.T, task *workflowv1alpha1.WorkflowTask, value *string) {
	t.Helper()
	v, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, workflowv1alpha1.AnnotationRecord, v)
	if err := k8sClient.Patch(context.Background(), task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("writing the record annotation: %v", err)
	}
}

// Without the record policy, anyone who may update a task can write its record. A record that
// says the task finished while its Job runs (the measured attack: Completed in 2000, on a task
// with a TTL) is not believed: the task is not deleted and neither is its Job, it stays
// Processing (its start kept) and never Ready, a RecordCorrected Warning names the annotation, the record is
// rewritten without the verdict, and suspend and cancel still reach the Job; once canceled, the
// TTL counts.
func TestForgedFinishedRecordIsNotBelieved(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, testutil.MakeTask("forged-record", ns).TTLSecondsAfterFinished(0))
	job := waitJob(t, task)
	runJob(t, job)
	running := waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)

	setRecord(t, task, ptr.To(`{"jobCreated":true,"phase":"Completed","reason":"Completed","completionTime":"2000-01-01T00:00:00Z"}`))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, task)
		g.Expect(recordOf(g, got).Phase).To(gomega.BeEmpty(), "the forged verdict is dropped from the record")
	}).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		got := getTask(g, task)
		g.Expect(got.DeletionTimestamp).To(gomega.BeNil(), "deleted by its TTL on the strength of a forged record")
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseProcessing))
		g.Expect(got.Status.CompletionTime).To(gomega.BeNil())
		g.Expect(got.Status.StartTime.Equal(running.Status.StartTime)).To(gomega.BeTrue(), "startTime %v, was %v", got.Status.StartTime, running.Status.StartTime)
		g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionReady)).To(gomega.BeFalse())
		current := &batchv1.Job{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), current)).To(gomega.Succeed())
		g.Expect(current.DeletionTimestamp).To(gomega.BeNil())
	}).Should(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(eventReasons(g, task)).To(gomega.ContainElement(controllers.EventRecordCorrected))
	}).Should(gomega.Succeed())

	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Suspend = ptr.To(true) })
	g.Eventually(func(g gomega.Gomega) {
		current := &batchv1.Job{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), current)).To(gomega.Succeed())
		g.Expect(current.Spec.Suspend).To(gomega.Equal(ptr.To(true)), "suspend reaches the Job")
	}).Should(gomega.Succeed())
	waitPhase(t, task, workflowv1alpha1.TaskPhaseSuspending)
	patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Cancel = ptr.To(true) })
	g.Eventually(func(g gomega.Gomega) {
		current := &batchv1.Job{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(job), current)).To(gomega.Succeed())
		g.Expect(current.DeletionTimestamp).NotTo(gomega.BeNil(), "cancel deletes the Job")
	}).Should(gomega.Succeed())
	// The real end counts: canceled, the task goes by its TTL (0 s).
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), &workflowv1alpha1.WorkflowTask{}))
	}).Should(gomega.BeTrue(), "deleted by its TTL once really finished")
}

// A finished task stays finished when its record is removed or garbled: no Job is created
// again, not even when the task's Job is gone; the phase, reason, start and completion times stay; the
// runner's access, revoked at the end, is not given back; the record is rebuilt from the status
// and the Job, and a RecordCorrected Warning says so.
func TestLostRecordDoesNotRerunFinishedTask(t *testing.T) {
	ctx := context.Background()
	garbled, empty := ptr.To("{not json"), ptr.To("{}")
	cases := map[string]struct {
		// finish brings the task to its end; afterwards it may remove the Job.
		finish  func(t *testing.T, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job)
		phase   workflowv1alpha1.TaskPhase
		reason  string
		jobGone bool
		record  *string // what the record becomes; nil: removed
	}{
		"completed, record garbled": {
			finish: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) { completeJob(t, job) },
			phase:  workflowv1alpha1.TaskPhaseCompleted, reason: workflowv1alpha1.ReasonCompleted, record: garbled,
		},
		"completed, Job removed since, record removed": {
			finish: func(t *testing.T, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				completeJob(t, job)
				waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
				deleteJob(t, job)
			},
			phase: workflowv1alpha1.TaskPhaseCompleted, reason: workflowv1alpha1.ReasonCompleted, jobGone: true,
		},
		"failed, record emptied": {
			finish: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) {
				failJob(t, job, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
			},
			phase: workflowv1alpha1.TaskPhaseError, reason: workflowv1alpha1.ReasonJobFailed, record: empty,
		},
		"Job deleted while running, record emptied": {
			finish: func(t *testing.T, _ *workflowv1alpha1.WorkflowTask, job *batchv1.Job) { deleteJob(t, job) },
			phase:  workflowv1alpha1.TaskPhaseError, reason: workflowv1alpha1.ReasonJobDeleted, jobGone: true, record: empty,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			task := createTask(t, testutil.MakeTask("finished", ns))
			job := waitJob(t, task)
			runJob(t, job)
			waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
			tc.finish(t, task, job)
			done := waitPhase(t, task, tc.phase)
			g := gomega.NewWithT(t)
			g.Eventually(func() bool {
				return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "finished-runner"}, &rbacv1.RoleBinding{}))
			}).Should(gomega.BeTrue(), "the runner's access ends with the task")
			before := recordOf(g, done)

			setRecord(t, done, tc.record)
			g.Eventually(func(g gomega.Gomega) {
				rec := recordOf(g, getTask(g, task))
				g.Expect(rec.JobCreated || rec.Phase != "").To(gomega.BeTrue(), "the controller writes a record again")
			}).Should(gomega.Succeed())
			g.Consistently(func(g gomega.Gomega) {
				current := &batchv1.Job{}
				err := k8sClient.Get(ctx, client.ObjectKeyFromObject(job), current)
				if tc.jobGone {
					g.Expect(apierrors.IsNotFound(err)).To(gomega.BeTrue(), "a new Job was created: %v", err)
				} else {
					g.Expect(err).NotTo(gomega.HaveOccurred())
					g.Expect(current.UID).To(gomega.Equal(job.UID), "the Job was replaced")
				}
				err = k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "finished-runner"}, &rbacv1.RoleBinding{})
				g.Expect(apierrors.IsNotFound(err)).To(gomega.BeTrue(), "the runner's access came back: %v", err)
				got := getTask(g, task)
				rec := recordOf(g, got)
				g.Expect(rec.Phase).To(gomega.Equal(string(tc.phase)), "the record is rebuilt with the verdict")
				g.Expect(rec.CompletionTime.Equal(before.CompletionTime)).To(gomega.BeTrue(), "record completionTime %v, was %v", rec.CompletionTime, before.CompletionTime)
				g.Expect(got.Status.Phase).To(gomega.Equal(tc.phase))
				g.Expect(condition(t, got, workflowv1alpha1.ConditionReady).Reason).To(gomega.Equal(tc.reason))
				g.Expect(got.Status.CompletionTime.Equal(done.Status.CompletionTime)).To(gomega.BeTrue(), "completionTime changed")
				g.Expect(got.Status.StartTime.Equal(done.Status.StartTime)).To(gomega.BeTrue(), "startTime %v, was %v", got.Status.StartTime, done.Status.StartTime)
			}).Should(gomega.Succeed())
			g.Eventually(func(g gomega.Gomega) {
				g.Expect(eventReasons(g, task)).To(gomega.ContainElement(controllers.EventRecordCorrected))
			}).Should(gomega.Succeed())
		})
	}
}

// deleteJob deletes the task's Job as someone else would; envtest runs no garbage collector, so
// it goes at once.
func deleteJob(t *testing.T, job *batchv1.Job) {
	t.Helper()
	if err := k8sClient.Delete(context.Background(), job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
}
