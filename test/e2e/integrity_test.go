package e2e_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/internal/devcluster"
)

// The attack of a hostile job pod, replayed as it was found: with its task's runner token
// (`kubectl create token`, no client certificate anywhere in the kubeconfig) it patches a
// finished phase, a completion time long ago and a forged Ready into its Processing task's
// status. config/admission refuses it naming the fields; the task stays Processing with its Job,
// and its ttlSecondsAfterFinished of 0 does not delete it.
func TestForgedStatusIsRefused(t *testing.T) {
	applyTask(t, "attacked", "  ttlSecondsAfterFinished: 0", "")
	pod := runningPod(t, "default", "attacked")
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "workflowtask", "attacked", "{.status.phase}") }).Should(gomega.Equal("Processing"))

	token := strings.TrimSpace(kubectl(t, "create", "token", "attacked-runner", "-n", "default", "--duration=10m"))
	kubeconfig := filepath.Join(t.TempDir(), "token-only.kubeconfig")
	if err := devcluster.WriteKubeconfig(kubeconfig, cluster.TokenConfig("")); err != nil {
		t.Fatal(err)
	}
	attack := `{"status":{"phase":"Completed","completionTime":"2000-01-01T00:00:00Z",` +
		`"conditions":[{"type":"Ready","status":"True","reason":"Forged","message":"done","lastTransitionTime":"2000-01-01T00:00:00Z"}]}}`
	patch := func(body string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "--token", token, "-n", "default",
			"patch", "workflowtask", "attacked", "--subresource=status", "--type=merge", "-p", body).CombinedOutput()
		return string(out), err
	}
	out, err := patch(attack)
	if err == nil {
		t.Fatalf("the forged status was accepted: %s", out)
	}
	for _, want := range []string{"status.phase", "status.conditions", "status.completionTime", "only the workflowtask operator may write"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not say %q: %s", want, out)
		}
	}
	// The same token may still report progress: the boundary is exact.
	if out, err := patch(`{"status":{"progress":[{"type":"upload","current":1,"total":2}]}}`); err != nil {
		t.Errorf("progress with the runner token: %v\n%s", err, out)
	}
	g.Consistently(func(g gomega.Gomega) {
		g.Expect(jsonpath(t, "default", "workflowtask", "attacked", "{.status.phase}")).To(gomega.Equal("Processing"))
		g.Expect(jsonpath(t, "default", "job", "attacked", "{.metadata.name}")).To(gomega.Equal("attacked"))
		g.Expect(jsonpath(t, "default", "pod", pod.Name, "{.status.phase}")).To(gomega.Equal("Running"))
	}, 3*time.Second, 250*time.Millisecond).Should(gomega.Succeed())
	completePod(t, pod)
	g.Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "workflowtask", "attacked", "--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).Should(gomega.BeEmpty(), "the real completion still starts the TTL")
}

// Cancel on a real control plane: the Job is deleted in the foreground, so it goes only after
// its pods (the garbage collector and the node); then the runner loses its RoleBinding. The
// task stays, Canceled, with the progress its pod reported.
func TestCancelEndsRunnerAccess(t *testing.T) {
	applyTask(t, "to-cancel", "", "")
	pod := runningPod(t, "default", "to-cancel")
	report(t, pod, "to-cancel", "set", "upload", "5/10")
	kubectl(t, "patch", "workflowtask", "to-cancel", "--type=merge", "-p", `{"spec":{"cancel":true}}`)
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "workflowtask", "to-cancel", "{.status.phase}") }).Should(gomega.Equal("Canceled"))
	g.Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "job/to-cancel", "rolebinding/to-cancel-runner", "pod/"+pod.Name,
			"--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).Should(gomega.BeEmpty(), "Job, pod and runner RoleBinding gone")
	kubectl(t, "get", "serviceaccount/to-cancel-runner", "role/to-cancel-runner")
	g.Expect(jsonpath(t, "default", "workflowtask", "to-cancel", "{.status.progress[0].current}")).To(gomega.Equal("5"))
}
