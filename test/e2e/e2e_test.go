package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
)

const empty = `{"data":{},"code":0,"msg":""}`

// saToken is a ServiceAccount's token for kube-apiserver (its own audience): for the API server
// and the manager's metrics, not the progress endpoint (endpointToken).
func saToken(t *testing.T, ns, name string) string {
	t.Helper()
	tok, err := cluster.Token(context.Background(), ns, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// endpointToken is a ServiceAccount's token for the progress endpoint's audience
// (apiserver.TokenAudience), what a web client sends it: `kubectl create token NAME
// --audience=progress.taskops.dev`.
func endpointToken(t *testing.T, ns, name string) string {
	t.Helper()
	tok, err := cluster.ProgressToken(context.Background(), ns, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// runningPod waits for the task's pod to run on the kwok node.
func runningPod(t *testing.T, ns, task string) corev1.Pod {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cluster.Admin)
	var pod corev1.Pod
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: workflowv1alpha1.LabelTaskName + "=" + task})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(pods.Items).NotTo(gomega.BeEmpty())
		pod = pods.Items[0]
		g.Expect(pod.Status.Phase).To(gomega.Equal(corev1.PodRunning))
	}).Should(gomega.Succeed())
	return pod
}

// report runs the progress CLI as the pod would: the task's runner ServiceAccount, with a
// token bound to the pod.
func report(t *testing.T, pod corev1.Pod, task string, args ...string) {
	t.Helper()
	if err := newRunner(t, pod, task).run(args...); err != nil {
		t.Fatal(err)
	}
}

// runner reports progress as a task's pod does (the progress CLI with the runner's token bound
// to the pod), returning errors instead of failing the test, for use off the test goroutine.
type runner struct {
	pod        corev1.Pod
	task       string
	kubeconfig string
}

func newRunner(t *testing.T, pod corev1.Pod, task string) runner {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cluster.Admin)
	token, err := kubeauth.Token(context.Background(), cs, pod.Namespace, task+"-runner", kubeauth.TokenOptions{BoundTo: kubeauth.BoundToPod(&pod)})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "runner.kubeconfig")
	if err := devcluster.WriteKubeconfig(kubeconfig, cluster.TokenConfig(token)); err != nil {
		t.Fatal(err)
	}
	return runner{pod: pod, task: task, kubeconfig: kubeconfig}
}

// run runs the progress CLI with args (e.g. set TYPE CURRENT/TOTAL).
func (r runner) run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.kubeconfig, workflowv1alpha1.EnvTaskName+"="+r.task,
		workflowv1alpha1.EnvTaskNamespace+"="+r.pod.Namespace, workflowv1alpha1.EnvPodName+"="+r.pod.Name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("workflowtask-progress %v: %w\n%s", args, err, out)
	}
	return nil
}

// set runs `workflowtask-progress set TYPE CURRENT/TOTAL`.
func (r runner) set(entry ...string) error { return r.run(append([]string{"set"}, entry...)...) }

func completePod(t *testing.T, pod corev1.Pod) {
	t.Helper()
	kubectl(t, "annotate", "pod", "-n", pod.Namespace, pod.Name, "workflow.taskops.dev/simulate=complete")
}

func jsonpath(t *testing.T, ns, kind, name, path string) string {
	t.Helper()
	return cluster.JSONPath(context.Background(), ns, kind, name, path)
}

var sampleNames = []string{"create-archive", "extract-archive", "import", "relocate", "remote-download", "upload"}

// The samples through their whole life, seen with kubectl and curl.
func TestSamples(t *testing.T) {
	g := gomega.NewWithT(t)
	alice, bob, admin := endpointToken(t, "default", "alice"), endpointToken(t, "default", "bob"), endpointToken(t, "default", "e2e-admin")
	kubectl(t, "create", "clusterrolebinding", "e2e-progress-admin", "--clusterrole=workflowtask-progress-admin", "--serviceaccount=default:e2e-admin")

	kubectl(t, "apply", "-f", "config/samples/")
	pods := map[string]corev1.Pod{}
	for _, name := range sampleNames {
		pods[name] = runningPod(t, "default", name)
		g.Eventually(func() string { return jsonpath(t, "default", "wft", name, "{.status.phase}") }).Should(gomega.Equal("Processing"))
	}

	// A worker reports, as the pod's runner, through the CLI.
	report(t, pods["upload"], "upload", "set", "upload_count", "3/6")
	report(t, pods["upload"], "upload", "set", "upload_single_0", "1024/2048", "/dst/a.bin")
	for _, name := range sampleNames[:5] {
		report(t, pods[name], name, "set", "demo_count", "1/2")
	}
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "upload", "{.status.progressSummary}") }).Should(gomega.Equal("3/6"))

	// kubectl get workflowtasks: every column filled.
	var table string
	g.Eventually(func(g gomega.Gomega) {
		table = kubectl(t, "get", "workflowtasks")
		lines := strings.Split(strings.TrimSpace(table), "\n")
		g.Expect(strings.Fields(lines[0])).To(gomega.Equal([]string{"NAME", "ID", "TYPE", "OWNER", "PHASE", "PROGRESS", "AGE"}))
		g.Expect(lines).To(gomega.HaveLen(len(sampleNames) + 1))
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			g.Expect(f).To(gomega.HaveLen(7), l)
			g.Expect(workflowv1alpha1.IsValidTaskID(f[1])).To(gomega.BeTrue(), l)
		}
	}).Should(gomega.Succeed())
	t.Logf("$ kubectl get workflowtasks\n%s", table)

	// The endpoint, with curl: owner, stranger, admin; and through the aggregation layer.
	id := jsonpath(t, "default", "wft", "upload", "{.status.id}")
	const full = `{"data":{"upload_count":{"total":6,"current":3,"identifier":""},"upload_single_0":{"total":2048,"current":1024,"identifier":"/dst/a.bin"}},"code":0,"msg":""}`
	g.Eventually(func() string { return curl(t, admin, "/workflow/progress/"+id) }).Should(gomega.Equal(full))
	for who, c := range map[string]struct{ token, path, want string }{
		"owner":          {alice, "/workflow/progress/" + id, full},
		"owner, /api/v4": {alice, "/api/v4/workflow/progress/" + id, full},
		"stranger":       {bob, "/workflow/progress/" + id, empty},
		"admin":          {admin, "/workflow/progress/" + id, full},
		"unknown task":   {alice, "/workflow/progress/AAAAAAAAAA", empty},
		"no login":       {"", "/workflow/progress/" + id, `"code":401`},
		"malformed id":   {alice, "/workflow/progress/..x", `"code":40001`},
	} {
		if got := curl(t, c.token, c.path); !strings.Contains(got, c.want) {
			t.Errorf("curl as %s: %s, want %s", who, got, c.want)
		}
	}
	for _, path := range []string{"/apis/progress.taskops.dev/v1alpha1/progress/" + id, "/apis/progress.taskops.dev/v1alpha1/namespaces/default/tasks/upload"} {
		if got := strings.TrimSpace(kubectl(t, "get", "--raw", path)); got != full {
			t.Errorf("kubectl get --raw %s: %s", path, got)
		}
	}

	// The workers finish: the pods complete, the tasks become Ready.
	for _, name := range sampleNames {
		completePod(t, pods[name])
	}
	kubectl(t, "wait", "--for=condition=Ready", "workflowtask", "--all", "--timeout=90s")
	describe := kubectl(t, "describe", "workflowtask", "upload")
	for _, want := range []string{"JobCreated", "Processing", "Completed", "Phase:", "Completed"} {
		if !strings.Contains(describe, want) {
			t.Errorf("kubectl describe lacks %q:\n%s", want, describe)
		}
	}

	// GitOps: re-applying the same manifests after completion changes nothing, starts nothing.
	// The first server-side apply over objects kubectl created client-side moves their field
	// ownership to the server-side manager (metadata only): spec, generation, Job and phase stay.
	// From then on, a GitOps tool's repeated apply is an exact no-op (same resourceVersion).
	state := func(name, fields string) string {
		return jsonpath(t, "default", "wft", name, fields) + "/" + jsonpath(t, "default", "job", name, "{.metadata.uid}")
	}
	for round, fields := range []string{"{.metadata.generation}/{.status.phase}", "{.metadata.resourceVersion}"} {
		before := map[string]string{}
		for _, name := range sampleNames {
			before[name] = state(name, fields)
		}
		kubectl(t, "apply", "--server-side", "-f", "config/samples/")
		time.Sleep(3 * time.Second) // time for the operator to react, if it wrongly did
		for _, name := range sampleNames {
			if after := state(name, fields); after != before[name] {
				t.Errorf("re-apply %d changed %s: %s -> %s", round+1, name, before[name], after)
			}
		}
	}
	if jobs := strings.Fields(kubectl(t, "get", "jobs", "-o", "name")); len(jobs) != len(sampleNames) {
		t.Errorf("jobs after re-applies: %v", jobs)
	}
	// Changing an immutable field is refused with a clear message.
	manifest, err := os.ReadFile(filepath.Join(root, "config", "samples", "workflow_v1alpha1_upload.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(t.TempDir(), "upload.yaml")
	_ = os.WriteFile(changed, []byte(strings.Replace(string(manifest), "type: upload", "type: relocate", 1)), 0o644)
	out, err := cluster.Kubectl(context.Background(), "apply", "--server-side", "-f", changed)
	if err == nil || !strings.Contains(string(out), "spec.type") || !strings.Contains(string(out), "type is immutable") {
		t.Errorf("changing spec.type: %v\n%s", err, out)
	}
}

const taskManifest = `apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: %s
  namespace: default
spec:
  type: relocate
  owner: system:serviceaccount:default:alice
%s
  template:
    metadata:
      annotations: {%s}
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: registry.k8s.io/e2e-test-images/busybox:1.36
`

func applyTask(t *testing.T, name, extraSpec, podAnnotations string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(f, []byte(fmt.Sprintf(taskManifest, name, extraSpec, podAnnotations)), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", f)
}

// Deleting a task removes its Job, pods and runner identity: the real garbage collector.
func TestDeleteRemovesEverything(t *testing.T) {
	applyTask(t, "to-delete", "", "")
	runningPod(t, "default", "to-delete")
	kinds := []string{"job/to-delete", "serviceaccount/to-delete-runner", "role/to-delete-runner", "rolebinding/to-delete-runner"}
	for _, k := range kinds {
		kubectl(t, "get", k)
	}
	kubectl(t, "delete", "workflowtask", "to-delete", "--wait=true")
	gomega.NewWithT(t).Eventually(func() string {
		args := append([]string{"get"}, kinds...)
		args = append(args, "--ignore-not-found", "-o", "name")
		out, _ := cluster.Kubectl(context.Background(), args...)
		pods, _ := cluster.Kubectl(context.Background(), "get", "pods", "-l", workflowv1alpha1.LabelTaskName+"=to-delete", "-o", "name")
		out = append(out, pods...)
		return strings.TrimSpace(string(out))
	}).Should(gomega.BeEmpty())
}

// A finished task with ttlSecondsAfterFinished is deleted once it passes.
func TestTTLAfterFinished(t *testing.T) {
	applyTask(t, "short-lived", "  ttlSecondsAfterFinished: 2", `"workflow.taskops.dev/simulate": "complete"`)
	gomega.NewWithT(t).Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "workflowtask", "short-lived", "--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).Should(gomega.BeEmpty())
	if out, _ := cluster.Kubectl(context.Background(), "get", "job", "short-lived", "--ignore-not-found", "-o", "name"); strings.TrimSpace(string(out)) != "" {
		// The Job goes with it (garbage collection), possibly a moment later.
		gomega.NewWithT(t).Eventually(func() string {
			out, _ := cluster.Kubectl(context.Background(), "get", "job", "short-lived", "--ignore-not-found", "-o", "name")
			return strings.TrimSpace(string(out))
		}).Should(gomega.BeEmpty())
	}
}

// The operator restarted mid-task: no progress is lost (pods write it to the API server, not
// to the operator), the endpoint answers again within seconds, and the task still completes.
func TestOperatorRestart(t *testing.T) {
	g := gomega.NewWithT(t)
	alice := endpointToken(t, "default", "alice")
	applyTask(t, "survivor", "", "")
	pod := runningPod(t, "default", "survivor")
	report(t, pod, "survivor", "set", "relocate", "10/100")
	id := ""
	g.Eventually(func() string { id = jsonpath(t, "default", "wft", "survivor", "{.status.id}"); return id }).ShouldNot(gomega.BeEmpty())
	g.Eventually(func() string { return curl(t, alice, "/workflow/progress/"+id) }).Should(gomega.ContainSubstring(`"current":10`))

	manager.Kill()
	report(t, pod, "survivor", "set", "relocate", "60/100") // while the operator is down
	restarted := time.Now()
	if err := startManager(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.Eventually(func() string { return curl(t, alice, "/workflow/progress/"+id) }).WithTimeout(15 * time.Second).
		Should(gomega.Equal(`{"data":{"relocate":{"total":100,"current":60,"identifier":""}},"code":0,"msg":""}`))
	t.Logf("the endpoint answered with the latest progress %.1f s after the operator was started again", time.Since(restarted).Seconds())

	completePod(t, pod)
	kubectl(t, "wait", "--for=condition=Ready", "workflowtask/survivor", "--timeout=90s")
}
