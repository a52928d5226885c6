package endpoint_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/plugin"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// pluginRun is kubectl-workflowtask running in the background as a user (their kubeconfig).
type pluginRun struct {
	out, errOut *testutil.SyncBuffer
	code        chan int
}

func kubeconfigFor(t *testing.T, u *envtest.AuthenticatedUser) string {
	t.Helper()
	kc, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startPlugin(t *testing.T, kubeconfig string, args ...string) *pluginRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &pluginRun{out: &testutil.SyncBuffer{}, errOut: &testutil.SyncBuffer{}, code: make(chan int, 1)}
	go func() {
		r.code <- plugin.Run(ctx, append(args, "--kubeconfig", kubeconfig), genericiooptions.IOStreams{In: strings.NewReader(""), Out: r.out, ErrOut: r.errOut})
	}()
	t.Cleanup(cancel)
	return r
}

func (r *pluginRun) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case c := <-r.code:
		return c
	case <-time.After(60 * time.Second):
		t.Fatalf("the plugin did not end; its output:\n%s\nstderr:\n%s", r.out, r.errOut)
	}
	return -1
}

// An owner with no RBAC on workflowtasks (a Cloudreve user) watches their task by name: the
// plugin falls back to the endpoint's event stream through kube-apiserver's aggregation layer,
// prints each change, and ends (0) when every entry reached its total.
func TestPluginWatchThroughTheStream(t *testing.T) {
	owner := certUser(t, "plugin-alice", "devs")
	task := createTaskWithProgress(t, testutil.MakeTask("followed", "plugin").Owner("plugin-alice"), entry("upload", 1024, 4096, ""))
	run := startPlugin(t, kubeconfigFor(t, owner), "watch", "followed", "-n", "plugin", "--timeout", "2m")

	g := gomega.NewWithT(t)
	g.Eventually(run.out.String).Should(gomega.ContainSubstring("plugin/followed  upload  1.0 KiB / 4.0 KiB  25%"))
	setProgress(t, task, entry("upload", 2048, 4096, ""), entry("upload_count", 1, 2, ""))
	g.Eventually(run.out.String).Should(gomega.And(
		gomega.ContainSubstring("upload  2.0 KiB / 4.0 KiB  50%"), gomega.ContainSubstring("upload_count  1/2  50%")))
	setProgress(t, task, entry("upload", 4096, 4096, ""), entry("upload_count", 2, 2, ""))
	if code := run.exitCode(t); code != plugin.ExitCompleted {
		t.Fatalf("exit code %d, want %d; output:\n%s\nstderr:\n%s", code, plugin.ExitCompleted, run.out, run.errOut)
	}
	out := run.out.String()
	for _, want := range []string{"[progress stream: no phase without RBAC on workflowtasks]", "plugin/followed: every progress entry reached its total"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsRune(out, 0x1b) {
		t.Errorf("output to a pipe holds escape codes:\n%q", out)
	}
}

// A stranger's watch of someone's task by ID and anyone's watch of an unknown ID look the same
// (the endpoint's no-existence-leak rule, kept by the plugin): no progress, until --timeout (3).
func TestPluginStrangerSeesNothing(t *testing.T) {
	owner, stranger := certUser(t, "plugin-carol", "devs"), certUser(t, "plugin-dave", "devs")
	task := createTaskWithProgress(t, testutil.MakeTask("private", "plugin").Owner("plugin-carol"), entry("upload", 1, 2, ""))
	id := workflowv1alpha1.TaskIDFromUID(task.UID)
	outputs := map[string]string{}
	for name, tc := range map[string]struct {
		kubeconfig, id string
	}{
		"stranger":   {kubeconfigFor(t, stranger), id},
		"unknown ID": {kubeconfigFor(t, owner), "AAAAAAAAAA"},
	} {
		run := startPlugin(t, tc.kubeconfig, "watch", "--id", tc.id, "--timeout", "3s")
		if code := run.exitCode(t); code != plugin.ExitTimeout {
			t.Errorf("%s: exit code %d, want %d (timeout); output:\n%s\nstderr:\n%s", name, code, plugin.ExitTimeout, run.out, run.errOut)
		}
		// The same lines but for the ID and the times.
		out := strings.ReplaceAll(run.out.String(), tc.id, "<id>")
		outputs[name] = strings.Join(dropTimes(out), "\n")
	}
	if outputs["stranger"] != outputs["unknown ID"] {
		t.Errorf("a stranger's watch and an unknown ID's differ:\nstranger:\n%s\nunknown:\n%s", outputs["stranger"], outputs["unknown ID"])
	}
	if !strings.Contains(outputs["stranger"], "no progress yet") {
		t.Errorf("the stranger's view does not say there is no progress:\n%s", outputs["stranger"])
	}
}

// dropTimes removes the HH:MM:SS a plain line starts with.
func dropTimes(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if len(l) > 9 && l[2] == ':' && l[5] == ':' {
			l = l[9:]
		}
		lines = append(lines, l)
	}
	return lines
}

// A user who may read workflowtasks watches through the Kubernetes API: the phase is seen, and
// the exit code is the phase's. The phases come from the controller, as in a cluster: the Job
// completes or fails as the Job controller would write it, the task is canceled by the plugin.
func TestPluginWatchExitCodes(t *testing.T) {
	admin := certUser(t, "plugin-admin", "system:masters")
	kubeconfig := kubeconfigFor(t, admin)
	for _, tc := range []struct {
		name   string
		finish func(t *testing.T, task *workflowv1alpha1.WorkflowTask)
		phase  workflowv1alpha1.TaskPhase
		code   int
	}{
		{"completed", func(t *testing.T, task *workflowv1alpha1.WorkflowTask) {
			finishJob(t, task, testutil.CompletionSteps())
		}, workflowv1alpha1.TaskPhaseCompleted, plugin.ExitCompleted},
		{"failed", func(t *testing.T, task *workflowv1alpha1.WorkflowTask) {
			finishJob(t, task, testutil.FailureSteps(batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit"))
		}, workflowv1alpha1.TaskPhaseError, plugin.ExitFailed},
		{"canceled", func(t *testing.T, task *workflowv1alpha1.WorkflowTask) {
			if code := startPlugin(t, kubeconfig, "cancel", task.Name, "-n", task.Namespace).exitCode(t); code != 0 {
				t.Fatalf("cancel: exit code %d", code)
			}
		}, workflowv1alpha1.TaskPhaseCanceled, plugin.ExitCanceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "exit-" + tc.name
			task := createTaskWithProgress(t, testutil.MakeTask(name, "plugin"), entry("upload", 1, 2, ""))
			run := startPlugin(t, kubeconfig, "watch", name, "-n", "plugin", "--timeout", "2m")
			gomega.NewWithT(t).Eventually(run.out.String).Should(gomega.ContainSubstring("plugin/" + name + "  upload  1 B / 2 B"))
			tc.finish(t, task)
			if code := run.exitCode(t); code != tc.code {
				t.Errorf("exit code %d, want %d; output:\n%s\nstderr:\n%s", code, tc.code, run.out, run.errOut)
			}
			if want := "plugin/" + name + ": " + string(tc.phase); !strings.Contains(run.out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, run.out)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		run := startPlugin(t, kubeconfig, "watch", "nope", "-n", "plugin")
		if code := run.exitCode(t); code != plugin.ExitCannotWatch || !strings.Contains(run.errOut.String(), "plugin/nope not found") {
			t.Errorf("exit code %d, stderr %q; want %d and not found", code, run.errOut, plugin.ExitCannotWatch)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		createTaskWithProgress(t, testutil.MakeTask("never-ends", "plugin"), entry("upload", 1, 2, ""))
		run := startPlugin(t, kubeconfig, "watch", "never-ends", "-n", "plugin", "--timeout", "2s")
		if code := run.exitCode(t); code != plugin.ExitTimeout || !strings.Contains(run.out.String(), "timed out after 2s") {
			t.Errorf("exit code %d, output %q; want %d and the timeout", code, run.out, plugin.ExitTimeout)
		}
	})
}

// finishJob moves the task's Job through the Job controller's status writes (this suite runs
// no Job controller).
func finishJob(t *testing.T, task *workflowv1alpha1.WorkflowTask, steps []func(*batchv1.JobStatus)) {
	t.Helper()
	job := &batchv1.Job{}
	job.Namespace, job.Name = task.Namespace, task.Name
	for _, step := range steps {
		testenv.UpdateJobStatus(t, k8sClient, job, step)
	}
}

// cancel, suspend and resume patch the spec, and say clearly when they do not apply.
func TestPluginActions(t *testing.T) {
	kubeconfig := kubeconfigFor(t, certUser(t, "plugin-operator", "system:masters"))
	run := func(args ...string) (int, string) {
		r := startPlugin(t, kubeconfig, append(args, "-n", "plugin")...)
		code := r.exitCode(t)
		return code, r.out.String() + r.errOut.String()
	}
	spec := func(name string) workflowv1alpha1.WorkflowTaskSpec {
		got := &workflowv1alpha1.WorkflowTask{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: "plugin", Name: name}, got); err != nil {
			t.Fatal(err)
		}
		return got.Spec
	}
	createTaskWithProgress(t, testutil.MakeTask("act", "plugin"))
	for _, step := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"resume", "act"}, 0, "workflowtask.workflow.taskops.dev/act already resumed"},
		{[]string{"suspend", "act"}, 0, "workflowtask.workflow.taskops.dev/act suspended"},
		{[]string{"suspend", "act"}, 0, "already suspended"},
		{[]string{"resume", "act"}, 0, "workflowtask.workflow.taskops.dev/act resumed"},
		{[]string{"cancel", "act"}, 0, "workflowtask.workflow.taskops.dev/act canceled"},
		{[]string{"cancel", "act"}, 0, "already canceled"},
		{[]string{"resume", "act"}, 1, "cannot resume workflowtask plugin/act: it was canceled"},
		{[]string{"suspend", "act"}, 1, "cannot suspend workflowtask plugin/act: it was canceled"},
		{[]string{"cancel", "nope"}, 1, `"nope" not found`},
		{[]string{"cancel"}, 1, "accepts 1 arg(s), received 0"},
	} {
		code, out := run(step.args...)
		if code != step.code || !strings.Contains(out, step.out) {
			t.Errorf("%v: exit code %d, output %q; want %d and %q", step.args, code, out, step.code, step.out)
		}
	}
	if s := spec("act"); s.Cancel == nil || !*s.Cancel || s.Suspend == nil || *s.Suspend {
		t.Errorf("spec after the actions: cancel %v, suspend %v; want canceled, not suspended", s.Cancel, s.Suspend)
	}

	done := createTaskWithProgress(t, testutil.MakeTask("done", "plugin"))
	finishJob(t, done, testutil.CompletionSteps())
	gomega.NewWithT(t).Eventually(func() workflowv1alpha1.TaskPhase {
		got := &workflowv1alpha1.WorkflowTask{}
		_ = k8sClient.Get(context.Background(), client.ObjectKeyFromObject(done), got)
		return got.Status.Phase
	}).Should(gomega.Equal(workflowv1alpha1.TaskPhaseCompleted))
	if code, out := run("cancel", "done"); code != 1 || !strings.Contains(out, "cannot cancel workflowtask plugin/done: it already finished (Completed)") {
		t.Errorf("cancel of a completed task: exit code %d, output %q", code, out)
	}

	// A task whose status changes all the time (here 20 progress writes a second, 20 times a
	// reporter's default) is suspended and resumed all the same: a conflict is read again and
	// retried.
	busy := createTaskWithProgress(t, testutil.MakeTask("busy", "plugin"), entry("upload", 0, 1000, ""))
	stop := make(chan struct{})
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			got := &workflowv1alpha1.WorkflowTask{}
			if k8sClient.Get(context.Background(), client.ObjectKeyFromObject(busy), got) == nil {
				got.Status.Progress = []workflowv1alpha1.ProgressEntry{entry("upload", i%1000, 1000, "")}
				_ = k8sClient.Status().Update(context.Background(), got)
			}
		}
	}()
	for range 5 {
		if code, out := run("suspend", "busy"); code != 0 || !strings.Contains(out, "suspended") {
			t.Errorf("suspend of a task being written: exit code %d, output %q", code, out)
		}
		if code, out := run("resume", "busy"); code != 0 || !strings.Contains(out, "resumed") {
			t.Errorf("resume of a task being written: exit code %d, output %q", code, out)
		}
	}
	close(stop)
	<-writing

	// Someone who may read tasks but not change them gets the API server's answer.
	reader := certUser(t, "plugin-reader", "devs")
	if err := k8sClient.Create(context.Background(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "plugin-task-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{workflowv1alpha1.GroupVersion.Group}, Resources: []string{"workflowtasks"},
			Verbs: []string{"get", "list", "watch"}}},
	}); err != nil {
		t.Fatal(err)
	}
	bindInNamespace(t, "plugin", "plugin-reader", "plugin-task-reader")
	createTaskWithProgress(t, testutil.MakeTask("theirs", "plugin"))
	r := startPlugin(t, kubeconfigFor(t, reader), "suspend", "theirs", "-n", "plugin")
	if code := r.exitCode(t); code != 1 || !strings.Contains(r.errOut.String(), "forbidden") {
		t.Errorf("suspend without the right: exit code %d, stderr %q; want 1 and forbidden", code, r.errOut)
	}
}

// Whoever may create Events in a task's namespace writes their reason, message and involved
// kind; describe prints them with none of the escape sequences (ESC), C1 controls (U+0080–U+009F)
// or bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) they were created with,
// as the API server returns them.
func TestPluginDescribeSanitizesEvents(t *testing.T) {
	ctx := context.Background()
	task := createTaskWithProgress(t, testutil.MakeTask("hostile-events", "plugin"))
	now := metav1.Now()
	for name, hostile := range map[string]string{
		"esc":  "\x1b[2J\x1b[31m\x1b]0;title\x07",
		"c1":   "\u009b2J\u0085\u008d\u009d0;title\u009c",
		"bidi": "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
	} {
		marker := strings.ToUpper(name)
		event := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: "hostile-" + name, Namespace: task.Namespace},
			InvolvedObject: corev1.ObjectReference{Kind: "Workflow" + hostile + "Task", Namespace: task.Namespace, Name: task.Name,
				UID: task.UID, APIVersion: workflowv1alpha1.GroupVersion.String()},
			Reason:  "Reason" + marker + hostile + "End",
			Message: "message " + marker + " " + hostile + " end",
			Type:    corev1.EventTypeWarning, Count: 1, FirstTimestamp: now, LastTimestamp: now,
			Source: corev1.EventSource{Component: "someone-else"},
		}
		if err := k8sClient.Create(ctx, event); err != nil {
			t.Fatalf("creating the %s event: %v", name, err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), event) })
	}

	r := startPlugin(t, kubeconfigFor(t, certUser(t, "plugin-describer", "system:masters")), "describe", task.Name, "-n", task.Namespace)
	if code := r.exitCode(t); code != 0 {
		t.Fatalf("describe: exit code %d; stderr:\n%s", code, r.errOut)
	}
	out := r.out.String()
	for _, marker := range []string{"ESC", "C1", "BIDI"} {
		if !strings.Contains(out, "Reason"+marker) || !strings.Contains(out, "message "+marker) {
			t.Errorf("describe does not show the %s event:\n%s", marker, out)
		}
	}
	for i, c := range out {
		if c != '\n' && (unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c)) {
			t.Errorf("describe printed %U at byte %d", c, i)
		}
	}
	if t.Failed() {
		t.Logf("describe's output:\n%q", out)
	}
}
