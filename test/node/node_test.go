package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
)

const taskManifest = `apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: %[1]s
  namespace: default
spec:
  type: %[2]s
  owner: system:serviceaccount:default:alice
  backoffLimit: %[4]d
  template:
    spec:
      restartPolicy: Never
      %[5]s
      containers:
      - name: worker
        image: ` + workerImage + `
        imagePullPolicy: Never
        args: ["--type", "%[2]s", "--pace", "0.05", "--dir", "/work", "--exit-code", "%[3]d"]
        volumeMounts: [{name: work, mountPath: /work}]
      volumes: [{name: work, emptyDir: {}}]
`

// applyYAML applies a manifest (kept in a file named name in the test's directory) as admin.
func applyYAML(t *testing.T, name, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", f)
}

// routeService routes the Service's ClusterIP on the node, as kube-proxy would, until the test
// ends (devcluster.Cluster.RouteService).
func routeService(t *testing.T, namespace, name string) *devcluster.ServiceRoute {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	route, err := cluster.RouteService(ctx, namespace, name, "")
	t.Cleanup(func() {
		stop()
		if route != nil {
			<-route.Done
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return route
}

func applyTask(t *testing.T, name, typ string, exitCode, backoffLimit int) {
	t.Helper()
	applyYAML(t, name+".yaml", fmt.Sprintf(taskManifest, name, typ, exitCode, backoffLimit, ingestHostAliases()))
}

// The operator runs as its Deployment on the real node, from the image built here: its pod is
// there, its log is readable, it holds the leader Lease, and kube-apiserver reaches its endpoint
// (aggregator routing to the pod, the operator-managed certificate verified).
func TestOperatorRunsAsItsDeployment(t *testing.T) {
	pods := strings.Fields(kubectl(t, "get", "pods", "-n", "workflowtask-system", "-l", "control-plane=controller-manager",
		"-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.spec.containers[0].image}{\"\\n\"}{end}"))
	if len(pods) != 3 || pods[1] != nodeName || pods[2] != operatorImage {
		t.Fatalf("manager pods: %v, want one on %s running %s", pods, nodeName, operatorImage)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return kubectl(t, "logs", "-n", "workflowtask-system", pods[0]) }).Should(gomega.ContainSubstring("Starting manager"))
	g.Eventually(func() string {
		return jsonpath(t, "workflowtask-system", "lease", "workflowtask-operator.taskops.dev", "{.spec.holderIdentity}")
	}).Should(gomega.HavePrefix(pods[0]))
	if out := kubectl(t, "get", "--raw", "/apis/progress.taskops.dev/v1alpha1"); !strings.Contains(out, "progress") {
		t.Errorf("aggregated discovery: %s", out)
	}
}

// A task runs the sample worker as a real container: its file work in an emptyDir, progress
// pushed to the operator by the real reporter with the pod's projected token; the task Completes
// with that progress, `kubectl logs` shows the program's output, the endpoint answers with it
// directly and through kube-apiserver, and deleting the task removes its pod (the garbage
// collector).
func TestWorkerTaskCompletes(t *testing.T) {
	applyTask(t, "real-relocate", "relocate", 0, 0)
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "real-relocate", "{.status.phase}") }).Should(gomega.Equal("Completed"))
	if got := jsonpath(t, "default", "wft", "real-relocate", "{.status.progress[0].type} {.status.progress[0].current}/{.status.progress[0].total}"); got != "relocate 30/30" {
		t.Errorf("progress %q", got)
	}
	pod := strings.TrimSpace(kubectl(t, "get", "pods", "-l", "workflow.taskops.dev/task-name=real-relocate", "-o", "jsonpath={.items[0].metadata.name}"))
	if node := jsonpath(t, "default", "pod", pod, "{.spec.nodeName}"); node != nodeName {
		t.Errorf("pod on %s, want the real node %s", node, nodeName)
	}
	if logs := kubectl(t, "logs", pod); !strings.Contains(logs, "done; progress") {
		t.Errorf("kubectl logs: %s", logs)
	}
	const want = `{"data":{"relocate":{"total":30,"current":30,"identifier":""}},"code":0,"msg":""}`
	if got := strings.TrimSpace(kubectl(t, "get", "--raw", "/apis/progress.taskops.dev/v1alpha1/namespaces/default/tasks/real-relocate")); got != want {
		t.Errorf("aggregated: %s", got)
	}
	// Directly, as a web client: the manager pod's address, alice's token for the endpoint's
	// audience (the installer's --progress-token-audiences).
	_, _ = cluster.Kubectl(context.Background(), "create", "serviceaccount", "alice", "-n", "default")
	token := strings.TrimSpace(kubectl(t, "create", "token", "alice", "-n", "default", "--audience="+apiserver.TokenAudience))
	managerIP := strings.TrimSpace(kubectl(t, "get", "pods", "-n", "workflowtask-system", "-l", "control-plane=controller-manager", "-o", "jsonpath={.items[0].status.podIP}"))
	id := jsonpath(t, "default", "wft", "real-relocate", "{.status.id}")
	out, err := exec.Command("curl", "-sk", "--max-time", "10", "-H", "Authorization: Bearer "+token,
		"https://"+managerIP+":9443/workflow/progress/"+id).Output()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("curl the endpoint at %s: %v %s", managerIP, err, out)
	}

	kubectl(t, "delete", "wft", "real-relocate")
	g.Eventually(func() string {
		return strings.TrimSpace(kubectl(t, "get", "pods", "-l", "workflow.taskops.dev/task-name=real-relocate", "-o", "name"))
	}).Should(gomega.BeEmpty(), "the task's pods are removed with it")
}

// A container that exits non-zero is retried by the Job up to backoffLimit, then the task ends
// in Error, its Failed condition naming the container's exit code.
func TestFailingContainerRetries(t *testing.T) {
	applyTask(t, "real-fails", "relocate", 3, 1)
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "real-fails", "{.status.phase}") }).
		WithTimeout(3 * time.Minute).Should(gomega.Equal("Error"))
	codes := strings.Fields(kubectl(t, "get", "pods", "-l", "workflow.taskops.dev/task-name=real-fails",
		"-o", "jsonpath={.items[*].status.containerStatuses[0].state.terminated.exitCode}"))
	if len(codes) != 2 || codes[0] != "3" || codes[1] != "3" {
		t.Errorf("attempts' exit codes %v, want two 3s (backoffLimit 1)", codes)
	}
	if msg := jsonpath(t, "default", "wft", "real-fails", `{.status.conditions[?(@.type=="Failed")].message}`); !strings.Contains(msg, "container worker exited with code 3 (Error)") {
		t.Errorf("Failed: %q", msg)
	}
}

// A canceled task's pod is terminated: its worker gets SIGTERM and writes a last progress line,
// and the native progress sidecar, stopped after it, forwards that line in its final write.
func TestCanceledPodsSidecarFinalWrite(t *testing.T) {
	manifest := fmt.Sprintf(`apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: real-cancel
  namespace: default
spec:
  type: remote_download
  owner: system:serviceaccount:default:alice
  progressSidecar: {}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 20
      %s
      containers:
      - name: worker
        image: %s
        imagePullPolicy: Never
        args: ["--type", "download", "--pace", "0.5", "--progress-file"]
`, ingestHostAliases(), workerImage)
	applyYAML(t, "cancel.yaml", manifest)
	g := gomega.NewWithT(t)
	// Running, and the sidecar forwards the lines.
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "real-cancel", "{.status.progress[0].current}") }).
		Should(gomega.MatchRegexp(`^([3-9]|[1-9][0-9])$`))
	pod := strings.TrimSpace(kubectl(t, "get", "pods", "-l", "workflow.taskops.dev/task-name=real-cancel", "-o", "jsonpath={.items[0].metadata.name}"))
	kubectl(t, "patch", "wft", "real-cancel", "--type=merge", "-p", `{"spec":{"cancel":true}}`)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "real-cancel", "{.status.phase}") }).Should(gomega.Equal("Canceled"))
	g.Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "pod", pod, "--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).Should(gomega.BeEmpty(), "the canceled task's pod is terminated and removed")
	g.Eventually(func() string {
		return jsonpath(t, "default", "wft", "real-cancel", "{.status.progress[0].identifier}")
	}).Should(gomega.Equal("terminated"), "the worker's last line, forwarded by the sidecar's final write")
}

// The six samples of config/samples/, their pods running the sample worker (as make run does
// on a real node), all Complete with the progress their containers reported.
func TestSamplesComplete(t *testing.T) {
	dir, err := devcluster.RealSamples(root, t.TempDir(), workerImage, ingestRoute.HostAliases(ingestHost))
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", dir)
	names := []string{"create-archive", "extract-archive", "import", "relocate", "remote-download", "upload"}
	g := gomega.NewWithT(t)
	for _, n := range names {
		g.Eventually(func() string { return jsonpath(t, "default", "wft", n, "{.status.phase}") }).
			WithTimeout(4*time.Minute).Should(gomega.Equal("Completed"), n)
		if summary := jsonpath(t, "default", "wft", n, "{.status.progressSummary}"); summary == "" {
			t.Errorf("%s completed without progress", n)
		}
	}
	kubectl(t, "delete", "-f", dir, "--wait=false")
}

// probePod runs the sample worker's --probe in a pod on the real node and returns its phase
// (Succeeded: reachable, Failed: not).
func probePod(t *testing.T, name, addr string) string {
	t.Helper()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: %s
    imagePullPolicy: Never
    args: ["--probe", "%s"]
`, name, workerImage, addr)
	applyYAML(t, name+".yaml", manifest)
	defer func() {
		_, _ = cluster.Kubectl(context.Background(), "delete", "pod", name, "-n", "default", "--wait=false")
	}()
	var phase string
	gomega.NewWithT(t).Eventually(func() string {
		phase = jsonpath(t, "default", "pod", name, "{.status.phase}")
		return phase
	}).Should(gomega.BeElementOf("Succeeded", "Failed"))
	return phase
}

// Pods reach this machine only: kube-apiserver through 10.96.0.1:443 (the DNAT to it), but not
// 10.96.0.2:443, which something outside this VM answers for the host itself.
func TestPodNetworkStaysOnTheMachine(t *testing.T) {
	const outside = "10.96.0.2:443"
	if out, err := exec.Command("timeout", "5", "bash", "-c", "</dev/tcp/10.96.0.2/443").CombinedOutput(); err != nil {
		t.Fatalf("the host itself does not reach %s (%v %s): the test needs an address outside this machine that answers", outside, err, out)
	}
	if phase := probePod(t, "probe-apiserver", "10.96.0.1:443"); phase != "Succeeded" {
		t.Errorf("a pod does not reach kube-apiserver at 10.96.0.1:443: %s", phase)
	}
	before := droppedFromPods(t)
	if phase := probePod(t, "probe-outside", outside); phase != "Failed" {
		t.Errorf("a pod reached %s, outside this machine: %s", outside, phase)
	}
	// Not merely unanswered: its packets were dropped here, before leaving the machine.
	if after := droppedFromPods(t); after <= before {
		t.Errorf("no packet from the pod network dropped (%d before, %d after): pod traffic may leave the machine", before, after)
	}
}

// droppedFromPods is the packet count of the FORWARD rule that drops the pod network's traffic
// for anywhere but the pod network (hack/real-node.sh's WFT-NODE chain); -1 without the rule.
func droppedFromPods(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-L", "WFT-NODE", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "DROP" {
			n, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("iptables: %q", line)
			}
			return n
		}
	}
	return -1
}
