package node_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `kubectl workflowtask watch` shows why a task's pod does not run, in the kubelet's words: a
// real kubelet refuses an image it may not pull (imagePullPolicy Never, not on the node) with
// ErrImageNeverPull, and the watch prints it under the task.
func TestPluginWatchShowsWhyThePodWaits(t *testing.T) {
	const name = "real-unpullable"
	manifest := fmt.Sprintf(`apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: %s
  namespace: default
spec:
  type: relocate
  owner: system:serviceaccount:default:alice
  template:
    spec:
      restartPolicy: Never
      %s
      containers:
      - name: worker
        image: docker.io/library/not-on-this-node:never
        imagePullPolicy: Never
`, name, ingestHostAliases())
	f := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", f)
	t.Cleanup(func() { kubectl(t, "delete", "wft", name, "--wait=false") })
	bin := filepath.Join(t.TempDir(), "kubectl-workflowtask")
	if out, err := command("go", "build", "-o", bin, "./cmd/kubectl-workflowtask"); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The watch ends at its timeout (the task never runs): exit 3, with what it printed.
	cmd := exec.Command(bin, "watch", name, "-n", "default", "--plain", "--timeout", "25s", "--kubeconfig", cluster.Kubeconfig)
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "container worker: ErrImageNeverPull") {
		t.Errorf("the watch does not say why the pod waits:\n%s", out)
	}
}
