package progress_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/pkg/progress"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// mode is how a test's writers reach a task: writing its status as the task's runner
// (direct), or pushing to the operator's ingest endpoint with a pod's projected token (the
// operator writes the status). The suites that touch progress run in both.
type mode struct {
	name string
	// target is where a writer in pod writes task (the pod is made a running pod of the task's
	// Job when pushing).
	target func(t *testing.T, task *workflowv1alpha1.WorkflowTask, pod string) progress.Options
	// env is the environment the CLI gets in pod of task.
	env func(t *testing.T, task *workflowv1alpha1.WorkflowTask, pod string) []string
}

var (
	direct = mode{name: "direct",
		target: func(t *testing.T, task *workflowv1alpha1.WorkflowTask, _ string) progress.Options {
			return progress.Options{Config: runnerConfig(t, task), Namespace: task.Namespace, Task: task.Name}
		},
		env: func(t *testing.T, task *workflowv1alpha1.WorkflowTask, _ string) []string { return runnerEnv(t, task) },
	}
	pushed = mode{name: "ingest", target: ingestTarget, env: ingestEnv}
	modes  = []mode{direct, pushed}
)

// eachMode runs f as a subtest per mode.
func eachMode(t *testing.T, f func(t *testing.T, m mode)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

// settled waits (up to 10 s) until check holds on the task's stored progress: a direct write is
// there at once, a push within the flush interval (a writer's last values and a one-entry
// command's at once).
func settled(t *testing.T, task *workflowv1alpha1.WorkflowTask, check func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry)) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) { check(g, progressOf(g, task)) }, 10*time.Second, 50*time.Millisecond).Should(gomega.Succeed())
}

// ingestFlushInterval is the endpoint's flush interval in this suite.
const ingestFlushInterval = time.Second

var (
	ingestOnce        sync.Once
	ingestBase        string
	ingestCA          []byte
	ingestEndpointErr error
)

// ingestEndpoint is an endpoint with --progress-ingest on the suite's manager (which elects no
// leader, so its flusher runs) and the PEM of the CA that signed its certificate.
func ingestEndpoint(t *testing.T) (string, []byte) {
	t.Helper()
	ingestOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			ingestEndpointErr = err
			return
		}
		opts := apiserver.NewOptions()
		opts.BindAddress = ln.Addr().String()
		opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
		opts.Ingest, opts.FlushInterval, opts.WriteBudget = true, ingestFlushInterval, 50
		if _, ingestEndpointErr = apiserver.SetupWithManager(context.Background(), mgr, opts, func(c *apiserver.Config) { c.Listener = ln }); ingestEndpointErr != nil {
			return
		}
		ingestBase = "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ingestCA, ingestEndpointErr = servingCA(ln.Addr().String())
	})
	if ingestEndpointErr != nil {
		t.Fatal(ingestEndpointErr)
	}
	return ingestBase, ingestCA
}

// servingCA is the PEM of the last certificate addr's TLS server sends: the CA of its
// self-signed chain.
func servingCA(addr string) ([]byte, error) {
	var conn *tls.Conn
	var err error
	for range 50 { // the server starts with the manager's runnables
		if conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}); err == nil { //nolint:gosec // reading the certificate to trust
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[len(chain)-1].Raw}), nil
}

// podToken makes pod a running pod of task's Job, as the Job controller would (envtest runs
// none), and returns a token of the task's runner bound to it for the ingest audience: what the
// kubelet projects into the pod.
func podToken(t *testing.T, task *workflowv1alpha1.WorkflowTask, name string) string {
	t.Helper()
	return testenv.PodToken(t, adminCfg, testenv.RunningTaskPod(t, k8sClient, task, name), ingest.Audience)
}

// ingestTarget is where a writer in pod pushes task's progress.
func ingestTarget(t *testing.T, task *workflowv1alpha1.WorkflowTask, pod string) progress.Options {
	t.Helper()
	base, ca := ingestEndpoint(t)
	return progress.Options{Ingest: &progress.IngestTarget{URL: base + ingest.Path(task.Namespace, task.Name), CAData: ca, Token: podToken(t, task, pod)},
		Namespace: task.Namespace, Task: task.Name, UID: task.UID}
}

// ingestEnv is the environment the controller gives pod of task when the operator takes pushes:
// the task's identity, the push URL, the CA and the projected token's file; no kubeconfig.
func ingestEnv(t *testing.T, task *workflowv1alpha1.WorkflowTask, pod string) []string {
	t.Helper()
	target := ingestTarget(t, task, pod)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(target.Ingest.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		workflowv1alpha1.EnvTaskName + "=" + task.Name, workflowv1alpha1.EnvTaskNamespace + "=" + task.Namespace,
		workflowv1alpha1.EnvTaskUID + "=" + string(task.UID), workflowv1alpha1.EnvPodName + "=" + pod,
		ingest.EnvURL + "=" + target.Ingest.URL, ingest.EnvCA + "=" + string(target.Ingest.CAData), ingest.EnvTokenFile + "=" + tokenFile}
}

// A pod of a deleted task pushing after a task of the same name took its place: the operator
// refuses (409), the reporter stops for good (ErrTaskReplaced) and the CLI exits 1 saying so;
// the new task gets nothing. (Directly, TestReporterStopsWhenTaskReplaced and
// TestCLITaskReplaced.)
func TestPushedTaskReplaced(t *testing.T) {
	old := newTask(t, "push-replaced")
	target := pushed.target(t, old, "push-replaced-pod")
	env := pushed.env(t, old, "push-replaced-pod")
	r, err := progress.New(target)
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 1, 10)
	if err := r.Flush(context.Background()); err != nil { // positive control
		t.Fatalf("push to the pod's own task: %v", err)
	}
	nt := mustReplace(t, old, runnerConfig(t, old))
	base, _ := ingestEndpoint(t)
	gomega.NewWithT(t).Eventually(func() bool { // the endpoint's informer has the new task
		return pushCode(t, base, old, target.Ingest.Token) == apiserver.CodeConflict
	}, 10*time.Second).Should(gomega.BeTrue())

	r.Set("upload", 2, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Flush(ctx); !errors.Is(err, progress.ErrTaskReplaced) {
		t.Errorf("Flush after the task was replaced = %v, want ErrTaskReplaced", err)
	}
	if err := r.Close(ctx); !errors.Is(err, progress.ErrTaskReplaced) {
		t.Errorf("Close = %v, want ErrTaskReplaced", err)
	}
	for _, args := range [][]string{{"set", "upload", "5/10"}, {"add", "upload_count", "1"}, {"delete", "upload"}} {
		if code, stderr := runCLI(t, env, args...); code != 1 || !strings.Contains(stderr, old.Namespace+"/"+old.Name+" "+replacedMsg) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 with %q", args, code, stderr, replacedMsg)
		}
	}
	time.Sleep(2 * ingestFlushInterval)
	if e := progressOf(gomega.NewWithT(t), nt); len(e) != 0 {
		t.Errorf("the new task got progress: %+v", e)
	}
}

// pushCode is the envelope code of an empty push for task with token.
func pushCode(t *testing.T, base string, task *workflowv1alpha1.WorkflowTask, token string) int {
	t.Helper()
	_, ca := ingestEndpoint(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	body, _ := json.Marshal(ingest.Push{TaskUID: task.UID})
	req, _ := http.NewRequest(http.MethodPut, base+ingest.Path(task.Namespace, task.Name), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct{ Code int }
	_ = json.NewDecoder(resp.Body).Decode(&env)
	return env.Code
}
