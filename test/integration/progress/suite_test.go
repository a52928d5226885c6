// Package progress_test proves the progress reporter against a real kube-apiserver, writing as
// the task's runner ServiceAccount with real tokens and the RBAC the controller grants.
package progress_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var (
	env       *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	certDir, err := os.MkdirTemp("", "progress-apiserver-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(certDir)
	env, err = testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A fixed certificate directory lets the API server be stopped and started again with the
	// same serving certificate and service-account keys, so tokens stay valid across it.
	env.ControlPlane.GetAPIServer().CertDir = certDir
	// kube-apiserver drains for longer than envtest's default 20 s on SIGTERM; past this it is
	// killed, which is a harder stop for TestAPIServerRestart anyway.
	env.ControlPlaneStopTimeout = 5 * time.Second
	if adminCfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := testenv.StartManager(ctx, adminCfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

var nsCounter atomic.Int32

// newTask creates a task in a namespace of its own and waits until the controller has given
// it a runner identity.
func newTask(t testing.TB, name string) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	ctx := context.Background()
	ns := testutil.NamespaceName("progress", nsCounter.Add(1), t.Name())
	task := testutil.MakeTask(name, ns).Obj()
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, ns, "placeholder"); err != nil { // creates the namespace
		t.Fatal(err)
	}
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got := &workflowv1alpha1.WorkflowTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
		g.Expect(got.Status.Phase).NotTo(gomega.BeEmpty())
	}).Should(gomega.Succeed())
	return task
}

// runnerConfig authenticates as the task's runner ServiceAccount with a real token.
func runnerConfig(t testing.TB, task *workflowv1alpha1.WorkflowTask) *rest.Config {
	t.Helper()
	token, err := testenv.Token(context.Background(), adminCfg, task.Namespace, task.Name+"-runner")
	if err != nil {
		t.Fatal(err)
	}
	return testenv.BearerConfig(adminCfg, token)
}

// progressOf reads the task's progress entries by type.
func progressOf(g gomega.Gomega, task *workflowv1alpha1.WorkflowTask) map[string]workflowv1alpha1.ProgressEntry {
	got := &workflowv1alpha1.WorkflowTask{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
	out := map[string]workflowv1alpha1.ProgressEntry{}
	for _, p := range got.Status.Progress {
		out[p.Type] = p
	}
	return out
}

// countingTransport counts the status writes that reach the wire, and can answer the first
// few of them itself with an error status (a fault injected in front of the real server).
type countingTransport struct {
	next      http.RoundTripper
	writes    atomic.Int64
	failFirst atomic.Int64
	failWith  int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/status") {
		c.writes.Add(1)
		if c.failFirst.Add(-1) >= 0 {
			return &http.Response{
				StatusCode: c.failWith, Status: http.StatusText(c.failWith), Request: req,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body:   ioNopCloser(fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected","code":%d}`, c.failWith)),
			}, nil
		}
	}
	return c.next.RoundTrip(req)
}

func counting(cfg *rest.Config) (*rest.Config, *countingTransport) {
	ct := &countingTransport{}
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { ct.next = rt; return ct }
	return cfg, ct
}
