package controller_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/gomega"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// `kubectl get workflowtasks` shows ID, Type, Owner, Phase and Progress filled for a task in
// each phase. Progress is blank only for a Queued task: reported progress means a pod has
// started, which makes the task Processing.
func TestKubectlGetShowsColumns(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	type row struct {
		name  string
		w     *testutil.TaskWrapper
		drive func(*workflowv1alpha1.WorkflowTask)
		phase workflowv1alpha1.TaskPhase
	}
	running := func(task *workflowv1alpha1.WorkflowTask) {
		job := waitJob(t, task)
		runJob(t, job)
		waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
	}
	report := func(entries ...workflowv1alpha1.ProgressEntry) func(*workflowv1alpha1.WorkflowTask) {
		return func(task *workflowv1alpha1.WorkflowTask) {
			if err := writeProgress(ctx, k8sClient, task, "pod-0", entries...); err != nil {
				t.Fatal(err)
			}
		}
	}
	rows := []row{
		{"queued-upload", testutil.MakeTask("queued-upload", ns), func(*workflowv1alpha1.WorkflowTask) {}, workflowv1alpha1.TaskPhaseQueued},
		{"processing-import", testutil.MakeTask("processing-import", ns).Type(workflowv1alpha1.TaskTypeImport).Owner("bob"),
			func(task *workflowv1alpha1.WorkflowTask) {
				running(task)
				report(progress("indexed", 120, 120), progress("imported", 45, 120))(task)
			}, workflowv1alpha1.TaskPhaseProcessing},
		{"suspended-archive", testutil.MakeTask("suspended-archive", ns).Type(workflowv1alpha1.TaskTypeCreateArchive).Suspend(true),
			report(progress("archive_size", 3<<20, 12<<20)), workflowv1alpha1.TaskPhaseSuspending},
		{"completed-relocate", testutil.MakeTask("completed-relocate", ns).Type(workflowv1alpha1.TaskTypeRelocate).Owner("carol"),
			func(task *workflowv1alpha1.WorkflowTask) {
				running(task)
				report(progress("relocate", 42, 42))(task)
				completeJob(t, waitJob(t, task))
			}, workflowv1alpha1.TaskPhaseCompleted},
		{"failed-download", testutil.MakeTask("failed-download", ns).Type(workflowv1alpha1.TaskTypeRemoteDownload),
			func(task *workflowv1alpha1.WorkflowTask) {
				running(task)
				report(progress("download", 700, 0))(task)
				failJob(t, waitJob(t, task), "BackoffLimitExceeded", "Job has reached the specified backoff limit")
			}, workflowv1alpha1.TaskPhaseError},
		{"canceled-extract", testutil.MakeTask("canceled-extract", ns).Type(workflowv1alpha1.TaskTypeExtractArchive),
			func(task *workflowv1alpha1.WorkflowTask) {
				running(task)
				report(progress("extract_count", 3, 9), progress("extract_size", 1<<20, 4<<20))(task)
				patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Cancel = new(bool); *s.Cancel = true })
			}, workflowv1alpha1.TaskPhaseCanceled},
	}
	for _, r := range rows {
		task := createTask(t, r.w)
		r.drive(task)
		waitPhase(t, task, r.phase)
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	var out string
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		b, err := exec.Command(env.ControlPlane.KubectlPath, "--kubeconfig", kubeconfig, "get", "workflowtasks", "-n", ns).CombinedOutput()
		g.Expect(err).NotTo(gomega.HaveOccurred(), string(b))
		out = string(b)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		g.Expect(strings.Fields(lines[0])).To(gomega.Equal([]string{"NAME", "ID", "TYPE", "OWNER", "PHASE", "PROGRESS", "AGE"}))
		g.Expect(lines).To(gomega.HaveLen(len(rows) + 1))
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if f[4] == string(workflowv1alpha1.TaskPhaseQueued) {
				g.Expect(f).To(gomega.HaveLen(6), "a queued task has no progress yet: %q", l)
			} else {
				g.Expect(f).To(gomega.HaveLen(7), "every column filled: %q", l)
			}
			g.Expect(workflowv1alpha1.IsValidTaskID(f[1])).To(gomega.BeTrue(), "ID column: %q", l)
		}
	}).Should(gomega.Succeed())
	t.Logf("kubectl get workflowtasks -n %s\n%s", ns, out)
}
