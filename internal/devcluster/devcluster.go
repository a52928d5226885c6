// Package devcluster drives the local cluster of hack/local-cluster.sh (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok as plain processes) and runs the operator
// against it as its own process: what `make run` and the end-to-end suite share.
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
)

// Cluster is a running local cluster.
type Cluster struct {
	// Root is the repository root.
	Root string
	// Dir is the cluster's data directory.
	Dir string
	// Kubeconfig is the admin kubeconfig (system:masters).
	Kubeconfig string
	// Env is the environment the cluster script ran with (data dir and ports).
	Env []string
	// Admin reaches the API server as admin.
	Admin *rest.Config
	// Out receives the script's and kubectl's output.
	Out io.Writer
}

// Up starts (or finds running) the cluster whose data dir is dir, with the given extra
// environment (LOCAL_CLUSTER_*_PORT=...), and waits until it is healthy.
func Up(ctx context.Context, root, dir string, extraEnv []string, out io.Writer) (*Cluster, error) {
	c := &Cluster{Root: root, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), Out: out,
		Env: append(append(os.Environ(), "LOCAL_CLUSTER_DIR="+dir), extraEnv...)}
	if err := c.script(ctx, "up"); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", c.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	c.Admin = cfg
	return c, nil
}

// Down stops the cluster (keeping its data dir unless purge).
func (c *Cluster) Down(purge bool) error {
	args := []string{"down"}
	if purge {
		args = append(args, "--purge")
	}
	return c.script(context.Background(), args...)
}

func (c *Cluster) script(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Root, "hack", "local-cluster.sh"), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = c.Env, c.Out, c.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("hack/local-cluster.sh %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// Kubectl runs kubectl as admin and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Dir = c.Root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// InstallOperator applies config/local (config/default without the Deployment, the endpoint's
// Service pointing at localhost:9443) and waits for the CRD.
func (c *Cluster) InstallOperator(ctx context.Context) error {
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-k", "config/local"); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/workflowtasks.workflow.taskops.dev")
	return err
}

// InstallOperatorAt is InstallOperator with the aggregation layer sent to the endpoint on
// progressPort of localhost (a manager started with ManagerOptions.ProgressPort), for suites that
// run beside make run's cluster.
func (c *Cluster) InstallOperatorAt(ctx context.Context, progressPort int) error {
	if err := c.InstallOperator(ctx); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "patch", "apiservice", "v1alpha1.progress.taskops.dev", "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"service":{"port":%d}}}`, progressPort))
	return err
}

// Token requests a token for a ServiceAccount (creating it when missing), valid for d, for
// kube-apiserver's own audience: a client's credentials against the API server. The progress
// endpoint refuses it (ProgressToken).
func (c *Cluster) Token(ctx context.Context, ns, name string, d time.Duration) (string, error) {
	return c.token(ctx, ns, name, kubeauth.TokenOptions{Expiration: d})
}

// ProgressToken requests a token for a ServiceAccount (creating it when missing), valid for d,
// for the progress endpoint's audience (apiserver.TokenAudience, as every shipped configuration
// and StartManager set it): what a client sends to the endpoint directly, `kubectl create token
// NAME --audience=progress.taskops.dev`. kube-apiserver refuses it.
func (c *Cluster) ProgressToken(ctx context.Context, ns, name string, d time.Duration) (string, error) {
	return c.token(ctx, ns, name, kubeauth.TokenOptions{Expiration: d, Audiences: []string{apiserver.TokenAudience}})
}

func (c *Cluster) token(ctx context.Context, ns, name string, o kubeauth.TokenOptions) (string, error) {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return "", err
	}
	if err := kubeauth.EnsureServiceAccount(ctx, cs, ns, name); err != nil {
		return "", err
	}
	return kubeauth.Token(ctx, cs, ns, name, o)
}

// TokenConfig is the admin config's server and CA with a bearer token.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return kubeauth.BearerConfig(c.Admin, token)
}

// WriteKubeconfig writes a kubeconfig for cfg's server, CA and bearer token.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "user"}
	kc.CurrentContext = "local"
	return clientcmd.WriteToFile(*kc, path)
}

// Manager is the operator running as its own process.
type Manager struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited (exitErr says how)
	exitErr error
	// ProgressURL is the endpoint's base URL (https://127.0.0.1:9443).
	ProgressURL string
}

// ManagerOptions say how to run the manager binary.
type ManagerOptions struct {
	Binary       string
	ProgressPort int       // 9443 unless set
	ProbePort    int       // 8081 unless set
	Log          io.Writer // the manager's output
	ExtraArgs    []string
	// Env is added to the harness's environment (e.g. GOMEMLIMIT as the Deployment sets it).
	Env []string
}

// StartManager runs the manager binary as the operator's ServiceAccount (the one config/
// binds the operator's RBAC to), with the progress endpoint on 127.0.0.1, and waits until it
// is ready and the aggregated API is available.
func (c *Cluster) StartManager(ctx context.Context, o ManagerOptions) (*Manager, error) {
	if o.ProgressPort == 0 {
		o.ProgressPort = 9443
	}
	if o.ProbePort == 0 {
		o.ProbePort = 8081
	}
	token, err := c.Token(ctx, "workflowtask-system", "workflowtask-controller-manager", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.Dir, "manager.kubeconfig")
	if err := WriteKubeconfig(kubeconfig, c.TokenConfig(token)); err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Binary, managerArgs(kubeconfig, o)...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.Binary, err)
	}
	m := &Manager{cmd: cmd, done: make(chan struct{}), ProgressURL: fmt.Sprintf("https://127.0.0.1:%d", o.ProgressPort)}
	go func() { m.exitErr = cmd.Wait(); close(m.done) }()

	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", o.ProbePort)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-m.done:
			return nil, fmt.Errorf("manager exited during start-up: %w", m.exitErr)
		default:
		}
		resp, err := http.Get(readyz) //nolint:gosec // a fixed local URL
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, errors.New("manager not ready within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=Available", "--timeout=60s", "apiservice/v1alpha1.progress.taskops.dev"); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// managerArgs are the manager's flags: those of config/manager's Deployment that apply to a
// process on this machine (leader election, the dedicated token audience), its ports on
// 127.0.0.1, and o.ExtraArgs.
func managerArgs(kubeconfig string, o ManagerOptions) []string {
	return append([]string{
		"--kubeconfig", kubeconfig,
		"--leader-elect", "--leader-election-namespace", "workflowtask-system",
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", o.ProbePort),
		"--progress-bind-address", fmt.Sprintf("127.0.0.1:%d", o.ProgressPort),
		"--progress-dns-names", "workflowtask-progress.workflowtask-system.svc," + apiserver.IngestServiceName + ".workflowtask-system.svc,localhost",
		"--progress-token-audiences", apiserver.TokenAudience,
	}, o.ExtraArgs...)
}

// Stop stops the manager (SIGTERM, then SIGKILL after 10 s).
func (m *Manager) Stop() {
	if m == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// Exited reports whether the manager process has ended (for example after losing its
// leader-election lease, which makes a controller-runtime manager exit).
func (m *Manager) Exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Kill stops the manager abruptly (as a crashed or evicted operator).
func (m *Manager) Kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// RealNodeUp joins a real node to the cluster (hack/real-node.sh up: kubelet, containerd, runc;
// Linux and root), importing the image tarballs under images. RealNodeDown undoes it, host
// changes included, and RealNodeCheck compares the host with how it was before up.
func (c *Cluster) RealNodeUp(ctx context.Context, images string) error {
	return c.realNode(ctx, images, "up")
}

// RealNodeDown stops the real node and undoes every host change.
func (c *Cluster) RealNodeDown(ctx context.Context) error { return c.realNode(ctx, "", "down") }

// RealNodeCheck fails when the host differs from before RealNodeUp.
func (c *Cluster) RealNodeCheck(ctx context.Context) error { return c.realNode(ctx, "", "check") }

// realNode runs hack/real-node.sh with args (up, down, check, route ...), its output to c.Out.
func (c *Cluster) realNode(ctx context.Context, images string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Root, "hack", "real-node.sh"), args...)
	cmd.Env = append(slices.Clip(c.Env), "REAL_NODE_IMAGES="+images)
	cmd.Stdout, cmd.Stderr = c.Out, c.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("hack/real-node.sh %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// CanRunRealNode says whether this machine can run a real node (Linux, root), and why not.
func CanRunRealNode() (bool, string) {
	if runtime.GOOS != "linux" {
		return false, "not Linux"
	}
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	return true, "Linux and root"
}

// JSONPath is `kubectl get <kind> <name> -n <ns> -o jsonpath=<path>` as admin ("" namespace: a
// cluster-scoped object), or "error: …" — for tests that poll an object's field.
func (c *Cluster) JSONPath(ctx context.Context, ns, kind, name, path string) string {
	args := []string{"get", kind, name, "-o", "jsonpath=" + path}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		return "error: " + strings.TrimSpace(err.Error())
	}
	return string(out)
}

// KubectlT is Kubectl for a test: the output, or the test fails.
func (c *Cluster) KubectlT(t interface {
	Helper()
	Fatal(args ...any)
}, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
