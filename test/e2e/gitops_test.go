package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/healthcheck"
)

// kubectlExit runs kubectl and returns its output and exit code, as a script sees them.
func kubectlExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := cluster.Kubectl(context.Background(), args...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatal(err)
	return "", -1
}

// On the local cluster, failed and canceled tasks settle: kubectl wait for "finished" returns
// for both (also when it was already waiting), kstatus and the Argo CD check call them
// Failed/Degraded; a completed task is Current/Healthy. docs/deployment.md's kubectl wait recipes give
// the exit codes they promise. Then the manager's metrics show the tasks.
func TestFinishedTasksSettle(t *testing.T) {
	applyTask(t, "gitops-fails", "  backoffLimit: 0", `"workflow.taskops.dev/simulate": "fail"`)
	applyTask(t, "gitops-done", "", `"workflow.taskops.dev/simulate": "complete"`)
	applyTask(t, "gitops-canceled", "", "")
	runningPod(t, "default", "gitops-canceled")

	// Waiting for "finished" before the cancel: it returns once the task is canceled.
	waiting := make(chan int, 1)
	go func() {
		_, code := kubectlExit(t, "wait", "--for=jsonpath={.status.completionTime}", "wft/gitops-canceled", "--timeout=60s")
		waiting <- code
	}()
	kubectl(t, "patch", "wft", "gitops-canceled", "--type=merge", "-p", `{"spec":{"cancel":true}}`)
	if code := <-waiting; code != 0 {
		t.Errorf("kubectl wait for completionTime on the canceled task: exit %d", code)
	}
	if out, code := kubectlExit(t, "wait", "--for=jsonpath={.status.completionTime}", "wft/gitops-fails", "wft/gitops-done", "--timeout=90s"); code != 0 {
		t.Fatalf("kubectl wait for completionTime: exit %d\n%s", code, out)
	}
	for name, phase := range map[string]string{"gitops-fails": "Error", "gitops-canceled": "Canceled", "gitops-done": "Completed"} {
		if got := jsonpath(t, "default", "wft", name, "{.status.phase}"); got != phase {
			t.Errorf("%s: phase %s, want %s", name, got, phase)
		}
	}

	// The recipes' exit codes.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"wait", "--for=condition=Ready", "wft/gitops-done", "--timeout=30s"}, 0},
		{[]string{"wait", "--for=condition=Ready", "wft/gitops-fails", "--timeout=2s"}, 1},
		{[]string{"wait", "--for=condition=Stalled", "wft/gitops-fails", "wft/gitops-canceled", "--timeout=30s"}, 0},
	} {
		out, code := kubectlExit(t, c.args...)
		if code != c.code {
			t.Errorf("kubectl %s: exit %d, want %d\n%s", strings.Join(c.args, " "), code, c.code, out)
		}
		if c.code == 1 && !strings.Contains(out, "timed out") {
			t.Errorf("kubectl %s: %s", strings.Join(c.args, " "), out)
		}
	}

	// kstatus, the Argo CD check and the Flux expressions on the live objects.
	script, err := os.ReadFile(filepath.Join(root, "config", "argocd", "workflow.taskops.dev", "WorkflowTask", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	var kustomization struct {
		Spec struct {
			HealthCheckExprs []healthcheck.FluxExprs `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "flux", "workflowtasks-kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kustomization); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][3]string{
		"gitops-fails":    {"Failed", "Degraded", "Failed"},
		"gitops-canceled": {"Failed", "Degraded", "Failed"},
		"gitops-done":     {"Current", "Healthy", "Current"},
	} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, u); err != nil {
			t.Fatal(err)
		}
		var got [3]string
		var msg string
		if got[0], msg, err = healthcheck.KStatus(u.Object); err != nil {
			t.Fatal(err)
		}
		if got[1], _, err = healthcheck.ArgoHealth(string(script), u.Object); err != nil {
			t.Fatal(err)
		}
		if got[2], err = healthcheck.FluxStatus(kustomization.Spec.HealthCheckExprs[0], u.Object); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: kstatus/Argo CD/Flux %v, want %v (kstatus: %s)", name, got, want, msg)
		}
	}

	// The manager's metrics, as Prometheus scrapes them: HTTPS, a token allowed to read /metrics.
	kubectl(t, "create", "serviceaccount", "e2e-scraper")
	kubectl(t, "create", "clusterrolebinding", "e2e-scraper", "--clusterrole=workflowtask-metrics-reader", "--serviceaccount=default:e2e-scraper")
	token := saToken(t, "default", "e2e-scraper")
	scrape := func() string {
		out, err := exec.Command("curl", "-sk", "--max-time", "10", "-H", "Authorization: Bearer "+token,
			fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)).Output()
		if err != nil {
			return "curl error: " + err.Error()
		}
		return string(out)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		phases := map[string]int{}
		for _, p := range strings.Fields(kubectl(t, "get", "wft", "-A", "-o", "jsonpath={.items[*].status.phase}")) {
			phases[p]++
		}
		m := scrape()
		for _, p := range []string{"Queued", "Processing", "Suspending", "Completed", "Error", "Canceled"} {
			g.Expect(sample(m, `workflowtask_tasks{phase="`+p+`"}`)).To(gomega.Equal(phases[p]), "workflowtask_tasks %s", p)
		}
		g.Expect(sample(m, "workflowtask_stalled_tasks")).To(gomega.Equal(0))
		for _, phase := range []string{"Error", "Canceled", "Completed"} {
			g.Expect(sample(m, `workflowtask_task_duration_seconds_count{phase="`+phase+`",type="relocate"}`)).To(gomega.BeNumerically(">=", 1), phase)
		}
	}).Should(gomega.Succeed())
	t.Logf("scraped:\n%s", grepLines(scrape(), "workflowtask_"))
}

// sample is the value of one series in a Prometheus text exposition (-1 when absent).
func sample(exposition, series string) int {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(exposition)
	if m == nil {
		return -1
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return int(f)
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
