// Package node_test is the real-node lane: the local cluster with a real kubelet, containerd and
// runc node (hack/real-node.sh), the operator installed from its one-file installer and running
// as its Deployment from the image built here, and tasks running the sample worker's image as
// real containers. The installer's operator takes pushed progress (--progress-ingest): tasks' pods
// push to the ingest Service, whose ClusterIP the lane routes to the leader's pod as kube-proxy
// would (hack/real-node.sh route, kept in step with the Service's EndpointSlices), and every
// task's template maps the Service's name to it (hostAliases: the node has no cluster DNS). It
// needs Linux and root; elsewhere it is skipped — except under CI=true, where it must run.
package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/project"
)

// The lane's ports: apart from make run's and the kwok e2e suite's, below the ephemeral range.
var clusterEnv = []string{
	"LOCAL_CLUSTER_APISERVER_PORT=17443", "LOCAL_CLUSTER_ETCD_PORT=13379", "LOCAL_CLUSTER_ETCD_PEER_PORT=13380",
	"LOCAL_CLUSTER_ETCD_METRICS_PORT=13381", "LOCAL_CLUSTER_KCM_PORT=13257", "LOCAL_CLUSTER_SCHEDULER_PORT=13259",
	"LOCAL_CLUSTER_KWOK_PORT=13247", "LOCAL_CLUSTER_AGGREGATOR_ROUTING=true",
}

const (
	operatorImage = "workflowtask-operator:node-e2e"
	workerImage   = "docker.io/library/workflowtask-demo-worker:node-e2e"
)

var (
	root      string
	dir       string // the lane's data: cluster, images, logs
	cluster   *devcluster.Cluster
	k8sClient client.Client
	nodeName  string
)

func TestMain(m *testing.M) {
	if goruntime.GOOS != "linux" || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "node: the real-node lane needs Linux and root, and CI must run it")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "node: skipped: the real-node lane needs Linux and root")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	ctrllog.SetLogger(logr.Discard())
	gomega.SetDefaultEventuallyTimeout(120 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "node:", err); return 1 }
	var err error
	if root, err = project.Root(); err != nil {
		return fail(err)
	}
	dir = filepath.Join(root, ".local", "node-e2e")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return fail(err)
	}
	if nodeName, err = os.Hostname(); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	images := filepath.Join(dir, "images")
	for _, img := range []struct{ which, ref string }{
		{"operator", operatorImage}, {"worker", "workflowtask-demo-worker:node-e2e"}, {"pause", "pause:dev"},
	} {
		if out, err := command("go", "run", "./hack/image", "--image", img.which, "--img", img.ref,
			"--platforms", "linux/"+goruntime.GOARCH, "--out", filepath.Join(images, img.which)); err != nil {
			return fail(fmt.Errorf("building the %s image: %w\n%s", img.which, err, out))
		}
	}
	clusterLog, err := os.Create(filepath.Join(dir, "logs", "cluster.log"))
	if err != nil {
		return fail(err)
	}
	if cluster, err = devcluster.Up(ctx, root, filepath.Join(dir, "cluster"), clusterEnv, clusterLog); err != nil {
		return fail(fmt.Errorf("%w (log: %s)", err, clusterLog.Name()))
	}
	defer func() { // last: keeps the data dir (logs) when something failed
		if code != 0 {
			fmt.Fprintln(os.Stderr, "node: logs kept in", filepath.Join(cluster.Dir, "logs"))
		}
		_ = cluster.Down(code == 0)
	}()
	nodeEnv := []string{"LOCAL_CLUSTER_DIR=" + cluster.Dir, "REAL_NODE_IMAGES=" + images}
	if out, err := command(append([]string{"env"}, append(nodeEnv, "hack/real-node.sh", "up")...)...); err != nil {
		return fail(fmt.Errorf("real node: %w\n%s", err, out))
	}
	// Down, and the host must be as it was before up (hack/real-node.sh check), or the lane fails.
	defer func() {
		if out, err := command(append([]string{"env"}, append(nodeEnv, "hack/real-node.sh", "down")...)...); err != nil {
			fmt.Fprintf(os.Stderr, "node: real node down: %v\n%s", err, out)
		}
		if out, err := command(append([]string{"env"}, append(nodeEnv, "hack/real-node.sh", "check")...)...); err != nil {
			fmt.Fprintf(os.Stderr, "node: the host was not restored: %v\n%s", err, out)
			code = 1
		}
	}()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fail(err)
	}
	if err := workflowv1alpha1.AddToScheme(scheme); err != nil {
		return fail(err)
	}
	if k8sClient, err = client.New(cluster.Admin, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	installer := filepath.Join(dir, "install.yaml")
	if out, err := command("env", "IMG="+operatorImage, "INSTALLER="+installer, "hack/build-installer.sh"); err != nil {
		return fail(fmt.Errorf("build-installer: %w\n%s", err, out))
	}
	if _, err := cluster.Kubectl(ctx, "apply", "--server-side", "-f", installer); err != nil {
		return fail(err)
	}
	if _, err := cluster.Kubectl(ctx, "wait", "-n", "workflowtask-system", "--for=condition=Available",
		"deployment/workflowtask-controller-manager", "--timeout=180s"); err != nil {
		out, _ := cluster.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
		return fail(fmt.Errorf("%w\n%s", err, out))
	}
	if _, err := cluster.Kubectl(ctx, "wait", "--for=condition=Available", "apiservice/v1alpha1.progress.taskops.dev", "--timeout=120s"); err != nil {
		return fail(err)
	}
	// Tasks' pods push their progress to the ingest Service (the shipped --progress-ingest): the
	// lane routes its ClusterIP to the leader's pod as kube-proxy would, until the node goes down.
	routeCtx, stopRouting := context.WithCancel(ctx)
	ingestRoute, err = cluster.RouteService(routeCtx, operatorNamespace, controllers.IngestServiceName, "")
	defer func() {
		stopRouting()
		if ingestRoute != nil {
			<-ingestRoute.Done
		}
	}()
	if err != nil {
		out, _ := cluster.Kubectl(ctx, "get", "pods,endpointslices", "-n", operatorNamespace, "--show-labels")
		return fail(fmt.Errorf("%w\n%s", err, out))
	}
	return m.Run()
}

// command runs a command in the repository root and returns its combined output.
func command(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func kubectl(t *testing.T, args ...string) string { t.Helper(); return cluster.KubectlT(t, args...) }

func jsonpath(t *testing.T, ns, kind, name, path string) string {
	t.Helper()
	return cluster.JSONPath(context.Background(), ns, kind, name, path)
}
