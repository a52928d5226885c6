// Package e2e_test runs the operator end to end on a real local Kubernetes (hack/local-cluster.sh:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), with the manager built
// and run as its own process, and checks it with the clients users use: kubectl and curl.
package e2e_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// Ports of the e2e cluster: apart from make run's, and below the ephemeral range (32768+) from
// which the envtest suites running alongside get theirs.
const (
	progressPort = 19443
	probePort    = 18081
	metricsPort  = 18443
)

var (
	root       string
	cluster    *devcluster.Cluster
	manager    *devcluster.Manager
	managerBin string
	cliBin     string
	pluginBin  string
	k8sClient  client.Client
	logDir     string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	gomega.SetDefaultEventuallyTimeout(60 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "e2e:", err); return 1 }
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		return fail(err)
	}
	if logDir, err = os.MkdirTemp("", "e2e-"); err != nil {
		return fail(err)
	}
	managerBin, cliBin = filepath.Join(logDir, "manager"), filepath.Join(logDir, "workflowtask-progress")
	pluginBin = filepath.Join(logDir, "kubectl-workflowtask")
	for bin, pkg := range map[string]string{managerBin: ".", cliBin: "./cmd/workflowtask-progress", pluginBin: "./cmd/kubectl-workflowtask"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("go build %s: %w\n%s", pkg, err, out))
		}
	}
	ctx := context.Background()
	dir := filepath.Join(root, ".local", "e2e-cluster")
	clusterLog, err := os.Create(filepath.Join(logDir, "cluster.log"))
	if err != nil {
		return fail(err)
	}
	cluster, err = devcluster.Up(ctx, root, dir, []string{
		"LOCAL_CLUSTER_APISERVER_PORT=16443", "LOCAL_CLUSTER_ETCD_PORT=12379", "LOCAL_CLUSTER_ETCD_PEER_PORT=12380",
		"LOCAL_CLUSTER_ETCD_METRICS_PORT=12381", "LOCAL_CLUSTER_KCM_PORT=12257", "LOCAL_CLUSTER_SCHEDULER_PORT=12259",
		"LOCAL_CLUSTER_KWOK_PORT=12247",
	}, clusterLog)
	if err != nil {
		return fail(fmt.Errorf("%w (log: %s)", err, clusterLog.Name()))
	}
	defer func() { _ = cluster.Down(true) }()
	if err := cluster.InstallOperatorAt(ctx, progressPort); err != nil {
		return fail(err)
	}
	if err := startManager(ctx); err != nil {
		return fail(err)
	}
	defer func() { manager.Stop() }()
	if k8sClient, err = client.New(cluster.Admin, client.Options{Scheme: testenv.Scheme}); err != nil {
		return fail(err)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, "e2e: logs kept in", logDir)
	} else {
		_ = os.RemoveAll(logDir)
	}
	return code
}

// startManager starts the operator's manager with the suite's flags and extra ones.
func startManager(ctx context.Context, extra ...string) error {
	log, err := os.OpenFile(filepath.Join(logDir, "manager.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	manager, err = cluster.StartManager(ctx, devcluster.ManagerOptions{Binary: managerBin, ProgressPort: progressPort, ProbePort: probePort, Log: log,
		ExtraArgs: append([]string{fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort)}, extra...)})
	return err
}

// kubectl runs kubectl as admin (or with a given kubeconfig via --kubeconfig in args).
func kubectl(t *testing.T, args ...string) string { t.Helper(); return cluster.KubectlT(t, args...) }

// curl GETs a path of the progress endpoint with a bearer token, as a web client would.
func curl(t *testing.T, token, path string) string {
	t.Helper()
	args := []string{"-sk", "--max-time", "10"}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	out, err := exec.Command("curl", append(args, manager.ProgressURL+path)...).Output()
	if err != nil {
		return "curl error: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}
