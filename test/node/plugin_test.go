package node_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var (
	buildPlugin sync.Once
	pluginBin   string
	pluginErr   error
)

// pluginBinary builds the kubectl plugin once for the lane.
func pluginBinary(t *testing.T) string {
	t.Helper()
	buildPlugin.Do(func() {
		pluginBin = filepath.Join(dir, "kubectl-workflowtask")
		if out, err := command("go", "build", "-o", pluginBin, "./cmd/kubectl-workflowtask"); err != nil {
			pluginErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginBin
}

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
	applyYAML(t, name+".yaml", manifest)
	t.Cleanup(func() { kubectl(t, "delete", "wft", name, "--wait=false") })
	bin := pluginBinary(t)
	// The watch ends at its timeout (the task never runs): exit 3, with what it printed.
	cmd := exec.Command(bin, "watch", name, "-n", "default", "--plain", "--timeout", "25s", "--kubeconfig", cluster.Kubeconfig)
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "container worker: ErrImageNeverPull") {
		t.Errorf("the watch does not say why the pod waits:\n%s", out)
	}
}

// `kubectl workflowtask logs -f`, started as soon as the task is applied, prints every line of the
// first pod and of the retry's new pod (a container exiting 3, backoffLimit 1), each prefixed
// with [pod/container], and returns once the task is in Error; `logs` without -f prints the same.
func TestPluginLogsFollowsRetries(t *testing.T) {
	const name = "real-logs"
	bin := pluginBinary(t)
	follow := exec.Command(bin, "logs", "-f", name, "-n", "default", "--kubeconfig", cluster.Kubeconfig)
	applyTask(t, name, "relocate", 3, 1)
	t.Cleanup(func() { kubectl(t, "delete", "wft", name, "--wait=false") })
	followed, err := follow.CombinedOutput()
	if err != nil {
		t.Fatalf("logs -f: %v\n%s", err, followed)
	}
	if phase := jsonpath(t, "default", "wft", name, "{.status.phase}"); phase != "Error" {
		t.Errorf("logs -f returned while the task is %s", phase)
	}
	pods := regexp.MustCompile(`(?m)^\[(`+name+`-[a-z0-9-]+)/worker\] `).FindAllStringSubmatch(string(followed), -1)
	seen := map[string]bool{}
	for _, p := range pods {
		seen[p[1]] = true
	}
	if len(seen) != 2 || !strings.Contains(string(followed), "done; progress") {
		t.Errorf("logs -f: lines of %d pods (%v), want the first and the retry's, each with the worker's output:\n%s", len(seen), seen, followed)
	}
	all, err := exec.Command(bin, "logs", name, "-n", "default", "--kubeconfig", cluster.Kubeconfig).CombinedOutput()
	if err != nil || len(all) != len(followed) {
		t.Errorf("logs: %v; %d bytes, logs -f %d:\n%s", err, len(all), len(followed), all)
	}
}
