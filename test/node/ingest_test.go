package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// The operator's namespace (the installer's) and the host of the push URL the controller gives
// tasks' pods (--progress-ingest, its default base: the ingest Service's name).
const operatorNamespace = "workflowtask-system"

var ingestHost = strings.TrimPrefix(controllers.DefaultIngestURL(operatorNamespace), "https://")

// ingestRoute is the ingest Service's ClusterIP port, routed on the node to the leader's pod
// (cluster.RouteService, from TestMain until the node goes down).
var ingestRoute *devcluster.ServiceRoute

// ingestHostAliases is the pod spec field every task of this lane carries: the node has no
// cluster DNS, so a task's own template maps the push URL's host to the Service's ClusterIP
// (a user's choice, as on any cluster without DNS for Services).
func ingestHostAliases() string {
	return fmt.Sprintf(`hostAliases: [{ip: %q, hostnames: [%q]}]`, ingestRoute.ClusterIP, ingestHost)
}

// The shipped installer runs the operator with --progress-ingest: a task's pod pushes its
// progress to the operator's ingest Service with its projected token, and has no API rights.
// The task Completes with the progress its worker pushed, written to the status by the operator
// (the field manager workflowtask-ingest, nobody else); the pod has no kube-apiserver token, and
// its direct status writes to kube-apiserver are refused — 403 without credentials (anonymous),
// 401 with the ingest token (not kube-apiserver's audience); the runner ServiceAccount has no Role,
// no RoleBinding and may not patch the task's status.
func TestIngestPodPushesWithoutAPIRights(t *testing.T) {
	const name = "real-ingest"
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
        image: %s
        imagePullPolicy: Never
        args: ["--type", "relocate", "--pace", "0.05", "--dir", "/work", "--try-direct-write", "/var/run/kube-root-ca/ca.crt"]
        volumeMounts: [{name: work, mountPath: /work}, {name: kube-root-ca, mountPath: /var/run/kube-root-ca, readOnly: true}]
      volumes: [{name: work, emptyDir: {}}, {name: kube-root-ca, configMap: {name: kube-root-ca.crt}}]
`, name, ingestHostAliases(), workerImage)
	f := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	before := routedConnections(t)
	kubectl(t, "apply", "-f", f)
	defer func() { _, _ = cluster.Kubectl(context.Background(), "delete", "-f", f, "--wait=false") }()
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", name, "{.status.phase}") }).Should(gomega.Equal("Completed"))
	ctx := context.Background()
	// The pushes went through the Service's address (the pod's connections DNATed to the leader).
	if after := routedConnections(t); after <= before {
		t.Errorf("no connection to the ingest Service's address routed (%d before, %d after)", before, after)
	}

	// The pod: on the real node, pushing (the controller's ingest environment), no API token.
	pods := &corev1.PodList{}
	if err := k8sClient.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels{"workflow.taskops.dev/task-name": name}); err != nil || len(pods.Items) != 1 {
		t.Fatalf("the task's pods: %d (%v), want 1", len(pods.Items), err)
	}
	pod := pods.Items[0]
	if pod.Spec.NodeName != nodeName || pod.Status.Phase != corev1.PodSucceeded {
		t.Errorf("pod %s on %q in phase %s, want Succeeded on the real node %s", pod.Name, pod.Spec.NodeName, pod.Status.Phase, nodeName)
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("automountServiceAccountToken %v, want false", a)
	}
	if want := name + "-runner"; pod.Spec.ServiceAccountName != want {
		t.Errorf("serviceAccountName %q, want %q", pod.Spec.ServiceAccountName, want)
	}
	var audiences []string
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				audiences = append(audiences, s.ServiceAccountToken.Audience)
			}
		}
	}
	if len(audiences) != 1 || audiences[0] != ingest.Audience {
		t.Errorf("projected tokens' audiences %q, want only %q", audiences, ingest.Audience)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if want := "https://" + ingestHost + ingest.Path("default", name); env[ingest.EnvURL] != want {
		t.Errorf("$%s = %q, want %q", ingest.EnvURL, env[ingest.EnvURL], want)
	}
	if !strings.Contains(env[ingest.EnvCA], "BEGIN CERTIFICATE") || env[ingest.EnvTokenFile] == "" {
		t.Errorf("$%s %q, $%s %q: want the CA bundle and the token's file", ingest.EnvCA, env[ingest.EnvCA], ingest.EnvTokenFile, env[ingest.EnvTokenFile])
	}

	// The progress, pushed, written by the operator alone.
	task := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, task); err != nil {
		t.Fatal(err)
	}
	if p := task.Status.Progress; len(p) != 1 || p[0].Type != "relocate" || p[0].Current != 30 || p[0].Total != 30 {
		t.Errorf("status.progress %+v, want relocate 30/30 alone", p)
	}
	if managers := progressManagers(t, task.ManagedFields); !slices.Equal(managers, []string{apiserver.IngestFieldManager}) {
		t.Errorf("status.progress managed by %q, want %q alone", managers, apiserver.IngestFieldManager)
	}

	// The pod's own attempts, from its log.
	logs := kubectl(t, "logs", pod.Name, "-c", "worker")
	if !strings.Contains(logs, "workflowtask-demo-worker: done; progress") {
		t.Errorf("the pod's log has no final progress:\n%s", logs)
	}
	for _, line := range []string{
		"workflowtask-demo-worker: kube-apiserver token: absent",
		"workflowtask-demo-worker: direct status write without credentials: HTTP 403",
		"workflowtask-demo-worker: direct status write with the ingest token: HTTP 401",
	} {
		if !slices.Contains(strings.Split(strings.TrimSpace(logs), "\n"), line) {
			t.Errorf("the pod's log has no line %q:\n%s", line, logs)
		}
	}

	// The runner: a ServiceAccount with no RBAC.
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: name + "-runner"}, &corev1.ServiceAccount{}); err != nil {
		t.Errorf("the runner ServiceAccount: %v", err)
	}
	for _, obj := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: name + "-runner"}, obj); !apierrors.IsNotFound(err) {
			t.Errorf("the runner's %T: %v, want NotFound", obj, err)
		}
	}
	// kubectl auth can-i prints no and exits 1 when the answer is no.
	out, err := cluster.Kubectl(ctx, "auth", "can-i", "patch", "workflowtasks.workflow.taskops.dev/"+name, "--subresource=status",
		"-n", "default", "--as=system:serviceaccount:default:"+name+"-runner")
	if got := strings.TrimSpace(string(out)); got != "no" || err == nil {
		t.Errorf("may the runner patch the task's status? %q (%v), want no", got, err)
	}
}

// routedConnections is how many connections pods opened to the ingest Service's address: the
// packet count of its DNAT rules in hack/real-node.sh's WFT-SERVICES chain (the nat table sees
// a connection's first packet only).
func routedConnections(t *testing.T) int {
	t.Helper()
	n := 0
	for _, c := range ingestRoutes(t) {
		n += c
	}
	return n
}

// ingestRoutes are the ingest Service address's DNAT rules: each endpoint with the number of
// connections sent to it.
func ingestRoutes(t *testing.T) map[string]int {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-L", "WFT-SERVICES", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables: %v\n%s", err, out)
	}
	routes := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[2] != "DNAT" || f[8] != ingestRoute.ClusterIP || !strings.HasPrefix(f[len(f)-1], "to:") {
			continue
		}
		c, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("iptables: %q", line)
		}
		routes[strings.TrimPrefix(f[len(f)-1], "to:")] += c
	}
	return routes
}

// The lane's route follows the ingest Service as kube-proxy would: the operator's pod deleted,
// the Deployment's new pod leads and labels itself, the Service's EndpointSlice names it, the
// route goes to it alone, and a task's pod pushes to it through the same ClusterIP.
func TestIngestRouteFollowsTheLeadersPod(t *testing.T) {
	managers := func() []corev1.Pod {
		pods := &corev1.PodList{}
		if err := k8sClient.List(context.Background(), pods, client.InNamespace(operatorNamespace),
			client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
			t.Fatal(err)
		}
		return pods.Items
	}
	old := managers()
	if len(old) != 1 || old[0].Status.PodIP == "" {
		t.Fatalf("%d manager pods, want one with an address", len(old))
	}
	if routes := ingestRoutes(t); len(routes) != 1 || !hasKey(routes, old[0].Status.PodIP+":9443") {
		t.Fatalf("routes %v, want the leader's pod %s:9443 alone", routes, old[0].Status.PodIP)
	}
	kubectl(t, "delete", "pod", "-n", operatorNamespace, old[0].Name, "--wait=false")
	g := gomega.NewWithT(t)
	var leader corev1.Pod
	g.Eventually(func() error {
		pods := managers()
		if len(pods) != 1 || pods[0].UID == old[0].UID || pods[0].Labels["workflow.taskops.dev/progress-ingest"] != "leader" {
			return fmt.Errorf("%d manager pods, want the new one alone, labelled leader", len(pods))
		}
		leader = pods[0]
		want := leader.Status.PodIP + ":9443"
		if routes := ingestRoutes(t); len(routes) != 1 || !hasKey(routes, want) {
			return fmt.Errorf("routes %v, want %s alone", routes, want)
		}
		return nil
	}).WithTimeout(3 * time.Minute).Should(gomega.Succeed())
	const name = "real-ingest-new-leader"
	applyTask(t, name, "relocate", 0, 0)
	defer func() { _, _ = cluster.Kubectl(context.Background(), "delete", "wft", name, "--wait=false") }()
	g.Eventually(func() string { return jsonpath(t, "default", "wft", name, "{.status.phase}") }).Should(gomega.Equal("Completed"))
	if got := jsonpath(t, "default", "wft", name, "{.status.progress[0].type} {.status.progress[0].current}/{.status.progress[0].total}"); got != "relocate 30/30" {
		t.Errorf("progress %q", got)
	}
	task := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, task); err != nil {
		t.Fatal(err)
	}
	if managers := progressManagers(t, task.ManagedFields); !slices.Equal(managers, []string{apiserver.IngestFieldManager}) {
		t.Errorf("status.progress managed by %q, want %q alone", managers, apiserver.IngestFieldManager)
	}
	if n := ingestRoutes(t)[leader.Status.PodIP+":9443"]; n == 0 {
		t.Errorf("no connection routed to the new leader's pod %s", leader.Status.PodIP)
	}
}

func hasKey(m map[string]int, k string) bool { _, ok := m[k]; return ok }

// progressManagers are the field managers that own status.progress (in the status
// subresource), sorted.
func progressManagers(t *testing.T, entries []metav1.ManagedFieldsEntry) []string {
	t.Helper()
	var managers []string
	for _, e := range entries {
		if e.FieldsV1 == nil {
			continue
		}
		var fields map[string]any
		if err := yaml.Unmarshal(e.FieldsV1.GetRawBytes(), &fields); err != nil {
			t.Fatalf("managedFields of %s: %v", e.Manager, err)
		}
		if status, ok := fields["f:status"].(map[string]any); ok {
			if _, ok := status["f:progress"]; ok {
				managers = append(managers, e.Manager)
			}
		}
	}
	slices.Sort(managers)
	return managers
}
