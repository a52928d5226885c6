// Package scale_test is the scale harness (make bench-scale): the local cluster (kwok node sized
// for thousands of pods), the operator built and run as a process, and measurements of what a
// platform team asks before installing it — how fast N tasks get their Jobs and run, how many
// API requests and how much memory a task costs the manager, how the endpoint answers at N
// beside kube-apiserver and the aggregated path, how long a full resync takes, and what M pods
// writing progress at once do to the control plane, with and without config/apf. Everything is
// on loopback. `go test ./test/scale` (part of make test) runs a small smoke of the same code
// (N=50, M=10) so that it cannot rot; the benchmarks run only with -bench.
package scale_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// Ports of the scale cluster: apart from make run's and the e2e suite's.
const (
	progressPort = 29443
	probePort    = 28081
	pprofPort    = 28082
	metricsPort  = 28443
)

var (
	tasksFlag    = flag.String("scale.tasks", "100,1000,10000", "BenchmarkScale: the task counts N to measure, in order")
	writersFlag  = flag.String("scale.writers", "10,100,1000", "BenchmarkStorm: the numbers M of job pods writing progress at once")
	stormFlag    = flag.Duration("scale.storm", 20*time.Second, "BenchmarkStorm: how long each storm lasts")
	memLimitFlag = flag.String("scale.memlimit", "", "the manager's GOMEMLIMIT; empty: the Deployment's (config/manager). Pushing pods cost the operator ≈ 25 KiB each (their connections): size it for M")
	profileDir   = flag.String("scale.profile", "", "a directory to keep profiles in: the manager's heap at each N (BenchmarkScale), its heap and CPU in each storm (BenchmarkStorm), kube-apiserver's CPU during one round of each kind (BenchmarkStatusWrite)")
	keepLogs     = flag.Bool("scale.keep-logs", false, "keep the manager's and the cluster's logs even when everything passed")
	capacity     = flag.Int("scale.capacity", 0, "pods the kwok node may run; 0: room for the tasks of every N and M above (and the smoke's) at once")

	root       string
	cluster    *devcluster.Cluster
	manager    *devcluster.Manager
	managerBin string
	logDir     string
	admin      client.Client
	// runID tells this run's namespaces apart from a previous run's (a cluster left behind).
	runID = strconv.FormatInt(time.Now().Unix()%100000, 36)
)

func TestMain(m *testing.M) {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // the harness's own informers: nothing to show
	os.Exit(run(m))
}

func run(m *testing.M) int {
	gomega.SetDefaultEventuallyTimeout(5 * time.Minute)
	gomega.SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "scale:", err); return 1 }
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		return fail(err)
	}
	if logDir, err = os.MkdirTemp("", "scale-"); err != nil {
		return fail(err)
	}
	managerBin = filepath.Join(logDir, "manager")
	build := exec.Command("go", "build", "-o", managerBin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("go build: %w\n%s", err, out))
	}
	ctx := context.Background()
	if *capacity == 0 {
		*capacity = 500 // the smoke's tasks, and room
		for _, n := range ints(*tasksFlag) {
			*capacity += n
		}
		for _, m := range ints(*writersFlag) {
			*capacity += 2 * m // without and with config/apf
		}
		for _, n := range ints(*notifyTasksFlag) {
			*capacity += 2 * n // with a sink and without
		}
	}
	clusterLog, err := os.Create(filepath.Join(logDir, "cluster.log"))
	if err != nil {
		return fail(err)
	}
	cluster, err = devcluster.Up(ctx, root, filepath.Join(root, ".local", "scale-cluster"), []string{
		"LOCAL_CLUSTER_APISERVER_PORT=26443", "LOCAL_CLUSTER_ETCD_PORT=22379", "LOCAL_CLUSTER_ETCD_PEER_PORT=22380",
		"LOCAL_CLUSTER_ETCD_METRICS_PORT=22381", "LOCAL_CLUSTER_KCM_PORT=22257", "LOCAL_CLUSTER_SCHEDULER_PORT=22259",
		"LOCAL_CLUSTER_KWOK_PORT=22247", fmt.Sprintf("LOCAL_CLUSTER_NODE_PODS=%d", *capacity),
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
	if admin, err = client.New(fastConfig(cluster.Admin), client.Options{Scheme: testenv.Scheme}); err != nil {
		return fail(err)
	}
	code := m.Run()
	if code != 0 || *keepLogs {
		fmt.Fprintln(os.Stderr, "scale: logs kept in", logDir)
	} else {
		_ = os.RemoveAll(logDir)
	}
	return code
}

// managerArgs are the flags the manager runs with beside the harness's (restartManager).
var managerArgs []string

// restartManager runs the manager with args (beside the harness's) unless it already does.
func restartManager(ctx context.Context, args []string) error {
	if slices.Equal(args, managerArgs) && !manager.Exited() {
		return nil
	}
	manager.Stop()
	managerArgs = args
	return startManager(ctx)
}

// startManager runs the operator as its own process, its metrics on plain HTTP on loopback
// (read by the harness), with managerArgs.
func startManager(ctx context.Context) error {
	log, err := os.OpenFile(filepath.Join(logDir, "manager.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	memLimit := *memLimitFlag
	if memLimit == "" {
		if memLimit, err = deploymentEnv("GOMEMLIMIT"); err != nil {
			return err
		}
	}
	manager, err = cluster.StartManager(ctx, devcluster.ManagerOptions{Binary: managerBin, ProgressPort: progressPort, ProbePort: probePort, Log: log,
		Env: []string{"GOMEMLIMIT=" + memLimit}, // as the Deployment runs it, unless -scale.memlimit
		ExtraArgs: append([]string{fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort), "--metrics-secure=false",
			fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pprofPort)}, managerArgs...)})
	return err
}

// deploymentEnv is the value the operator's Deployment (config/manager) gives the manager
// container's environment variable name.
func deploymentEnv(name string) (string, error) {
	c, err := testenv.DeploymentContainer("config/manager/manager.yaml", "manager")
	if err != nil {
		return "", err
	}
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, nil
		}
	}
	return "", fmt.Errorf("config/manager: the manager container has no %s", name)
}

// ints parses a comma-separated list of counts.
func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}
