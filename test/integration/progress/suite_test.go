// Package progress_test proves the progress reporter against a real kube-apiserver, writing as
// the task's runner ServiceAccount with real tokens and the RBAC the controller grants.
package progress_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
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
	// mgr is the operator's manager (the controller, and the ingest endpoint once a test in
	// ingest mode needs it).
	mgr ctrl.Manager
)

func TestMain(m *testing.M) {
	certDir, err := os.MkdirTemp("", "progress-apiserver-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := testenv.Main(m, testenv.Suite{Manager: true, Configure: func(e *envtest.Environment) error {
		// A fixed certificate directory lets the API server be stopped and started again with
		// the same serving certificate and service-account keys, so tokens stay valid across it.
		e.ControlPlane.GetAPIServer().CertDir = certDir
		// kube-apiserver drains for longer than envtest's default 20 s on SIGTERM; past this it
		// is killed, which is a harder stop for TestAPIServerRestart anyway.
		e.ControlPlaneStopTimeout = 5 * time.Second
		return nil
	}}, func(e *testenv.Env) { env, adminCfg, k8sClient, mgr = e.Environment, e.Admin, e.Client, e.Manager })
	_ = os.RemoveAll(certDir)
	os.Exit(code)
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
	// retryAfter, when set, is the delay the injected answers ask for (as API Priority and
	// Fairness does on a 429: Retry-After and the Status's details.retryAfterSeconds).
	retryAfter int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/status") {
		c.writes.Add(1)
		if c.failFirst.Add(-1) >= 0 {
			header, details := http.Header{"Content-Type": {"application/json"}}, ""
			if c.retryAfter > 0 {
				header.Set("Retry-After", fmt.Sprint(c.retryAfter))
				details = fmt.Sprintf(`,"details":{"retryAfterSeconds":%d}`, c.retryAfter)
			}
			return &http.Response{
				StatusCode: c.failWith, Status: http.StatusText(c.failWith), Request: req, Header: header,
				Body: ioNopCloser(fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected","code":%d%s}`, c.failWith, details)),
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
