package progress_test

// A pod of a deleted task must never write into a new task that reuses the name. These tests
// delete a task, create a new one of the same name (a new UID) and leave the old task's runner
// identity its rights on that name, as in a real cluster until garbage collection has removed
// the old identity (or when the new task took it over): then every writer of the old task
// fails, permanently, and the new task stays untouched.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// The CLI's message when the task is not this pod's any more.
const replacedMsg = "was deleted and re-created: this pod belonged to the old one; nothing written"

// replaceTask deletes old and creates a new task of the same name, and makes sure that the old
// task's runner identity (runner, a config with its token) may read and patch the new task's
// status: the runner RBAC is per task name (a Role with resourceNames), so an identity that
// outlives its task has these rights on the next task of that name. Here they are granted
// explicitly, by a Role and RoleBinding of their own, whatever the controller does with the
// runner objects of the old and the new task.
func replaceTask(ctx context.Context, old *workflowv1alpha1.WorkflowTask, runner *rest.Config) (*workflowv1alpha1.WorkflowTask, error) {
	if err := k8sClient.Delete(ctx, old); err != nil {
		return nil, fmt.Errorf("deleting the old task: %w", err)
	}
	if err := poll(ctx, func() (bool, error) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(old), &workflowv1alpha1.WorkflowTask{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}); err != nil {
		return nil, fmt.Errorf("waiting for the old task to go: %w", err)
	}
	nt := testutil.MakeTask(old.Name, old.Namespace).Obj()
	if err := k8sClient.Create(ctx, nt); err != nil {
		return nil, fmt.Errorf("creating the new task: %w", err)
	}
	if nt.UID == old.UID || nt.UID == "" {
		return nil, fmt.Errorf("the new task has UID %q, the old one %q", nt.UID, old.UID)
	}
	meta := metav1.ObjectMeta{Name: old.Name + "-runner-rights", Namespace: old.Namespace}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{workflowv1alpha1.GroupVersion.Group}, Resources: []string{"workflowtasks/status"},
		ResourceNames: []string{old.Name}, Verbs: []string{"get", "patch"},
	}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: old.Name + "-runner", Namespace: old.Namespace}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := k8sClient.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("granting the runner rights on the new task: %w", err)
		}
	}
	rc, err := client.New(runner, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		return nil, err
	}
	if err := poll(ctx, func() (bool, error) { // the runner sees the new task
		got := &workflowv1alpha1.WorkflowTask{}
		err := rc.SubResource("status").Get(ctx, nt, got)
		return err == nil && got.UID == nt.UID, nil
	}); err != nil {
		return nil, fmt.Errorf("waiting for the runner to read the new task: %w", err)
	}
	return nt, nil
}

// poll calls cond every 50 ms until it is true, fails, or 30 s pass.
func poll(ctx context.Context, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mustReplace(t *testing.T, old *workflowv1alpha1.WorkflowTask, runner *rest.Config) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	nt, err := replaceTask(context.Background(), old, runner)
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

// statusRequests counts the requests for task status that reach the wire, and can run a hook
// just before the next PATCH goes out (after the writer's read: a race made deterministic).
type statusRequests struct {
	next          http.RoundTripper
	gets, patches atomic.Int64
	beforePatch   atomic.Pointer[func()]
}

func (s *statusRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/status") {
		switch req.Method {
		case http.MethodGet:
			s.gets.Add(1)
		case http.MethodPatch:
			s.patches.Add(1)
			if f := s.beforePatch.Swap(nil); f != nil {
				(*f)()
			}
		}
	}
	return s.next.RoundTrip(req)
}

func (s *statusRequests) total() int64 { return s.gets.Load() + s.patches.Load() }

func countStatusRequests(cfg *rest.Config) (*rest.Config, *statusRequests) {
	s := &statusRequests{}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { s.next = rt; return s })
	return cfg, s
}

// replacedLogs counts the reporter's log lines about the replaced task.
func replacedLogs() (logr.Logger, *atomic.Int64) {
	var n atomic.Int64
	return funcr.New(func(_, args string) {
		if strings.Contains(args, "re-created") {
			n.Add(1)
		}
	}, funcr.Options{}), &n
}

func flush(r *progress.Reporter) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.Flush(ctx)
}

// What the API server does with the candidate preconditions on a status write, once the task
// was replaced. It explains the reporter's design: metadata.uid in a patch of the status
// subresource is NOT checked (the status strategy copies the stored object's metadata over the
// patched one), a resourceVersion is (409), and so is a JSON patch test op on /metadata/uid
// (422). Only an update (PUT) turns metadata.uid into a UID precondition.
func TestAPIServerUIDPreconditions(t *testing.T) {
	ctx := context.Background()
	old := newTask(t, "api-uid")
	runner := runnerConfig(t, old)
	nt := mustReplace(t, old, runner)
	rc, err := progress.NewRESTClient(runner)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(pt types.PatchType, body string) (int, error) {
		req := rc.Patch(pt).Namespace(nt.Namespace).Resource("workflowtasks").Name(nt.Name).SubResource("status")
		if pt == types.ApplyPatchType {
			req = req.Param("fieldManager", "uid-test").Param("force", "true")
		}
		res := req.Body([]byte(body)).Do(ctx)
		var code int
		res.StatusCode(&code)
		return code, res.Error()
	}
	apply := func(typ string, meta map[string]string) string {
		meta["name"], meta["namespace"] = nt.Name, nt.Namespace
		b, _ := json.Marshal(map[string]any{"apiVersion": workflowv1alpha1.GroupVersion.String(), "kind": "WorkflowTask", "metadata": meta,
			"status": map[string]any{"progress": []map[string]any{{"type": typ, "current": 1, "total": 2, "updateTime": "2026-01-01T00:00:00.000000Z"}}}})
		return string(b)
	}
	g := gomega.NewWithT(t)

	// A stale metadata.uid in an apply of the status: accepted, written into the new task.
	if code, err := patch(types.ApplyPatchType, apply("stale_uid", map[string]string{"uid": string(old.UID)})); code != 200 || err != nil {
		t.Errorf("apply with a stale metadata.uid: %d %v; this test expected 200 (metadata is ignored on /status)", code, err)
	}
	if _, ok := progressOf(g, nt)["stale_uid"]; !ok {
		t.Error("apply with a stale metadata.uid was not written: the API server now checks it, and the reporter's read before each write could go")
	}

	// A stale resourceVersion: 409 Conflict.
	code, err := patch(types.ApplyPatchType, apply("stale_rv", map[string]string{"uid": string(old.UID), "resourceVersion": old.ResourceVersion}))
	if code != http.StatusConflict || !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "the object has been modified") {
		t.Errorf("apply with a stale resourceVersion: %d %v, want 409 Conflict", code, err)
	}

	// A JSON patch testing /metadata/uid through the status subresource: 422 Invalid for the
	// old UID, applied for the new one.
	jsonPatch := func(uid types.UID, typ string) string {
		return fmt.Sprintf(`[{"op":"test","path":"/metadata/uid","value":%q},{"op":"add","path":"/status/progress/-","value":{"type":%q,"current":1,"total":1}}]`, uid, typ)
	}
	code, err = patch(types.JSONPatchType, jsonPatch(old.UID, "json_stale"))
	if code != http.StatusUnprocessableEntity || !apierrors.IsInvalid(err) {
		t.Errorf("JSON patch testing the old uid: %d %v, want 422 Invalid", code, err)
	}
	if code, err := patch(types.JSONPatchType, jsonPatch(nt.UID, "json_current")); code != 200 || err != nil {
		t.Errorf("JSON patch testing the current uid: %d %v, want 200", code, err)
	}
	e := progressOf(g, nt)
	if _, ok := e["json_stale"]; ok {
		t.Error("the JSON patch with a failed uid test was written")
	}
	if _, ok := e["json_current"]; !ok {
		t.Error("the JSON patch with a passed uid test was not written")
	}

	// An update (PUT, here as the admin: the runner may not update) with the old UID: 409
	// "Precondition failed: UID in precondition".
	cur := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(nt), cur); err != nil {
		t.Fatal(err)
	}
	cur.UID = old.UID
	err = k8sClient.Status().Update(ctx, cur)
	if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "Precondition failed: UID in precondition") {
		t.Errorf("status update with the old UID: %v, want 409 Precondition failed", err)
	}
	t.Logf("status PUT with the old UID: %v", err)
}

// A reporter of a task that was deleted and re-created stops: Flush and Close return
// ErrTaskReplaced, it logs that once, updates never block, it makes (almost) no request after
// the refusal, and the new task gets nothing.
func TestReporterStopsWhenTaskReplaced(t *testing.T) {
	for name, withUID := range map[string]bool{"uid given": true, "uid pinned by the first read": false} {
		t.Run(name, func(t *testing.T) {
			old := newTask(t, "replaced")
			runner := runnerConfig(t, old)
			cfg, reqs := countStatusRequests(runner)
			logger, logged := replacedLogs()
			const interval = 100 * time.Millisecond
			opts := progress.Options{Config: cfg, Namespace: old.Namespace, Task: old.Name, Interval: interval, Logger: logger}
			if withUID {
				opts.UID = old.UID
			}
			r, err := progress.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			// Positive control: the task of the reporter gets the writes.
			r.Set("upload", 1, 10)
			if err := flush(r); err != nil {
				t.Fatalf("write to the reporter's own task: %v", err)
			}
			g := gomega.NewWithT(t)
			if got := progressOf(g, old)["upload"].Current; got != 1 {
				t.Fatalf("own task: upload = %d, want 1", got)
			}

			nt := mustReplace(t, old, runner)
			r.Set("upload", 2, 10)
			err = flush(r)
			if !errors.Is(err, progress.ErrTaskReplaced) || !strings.Contains(err.Error(), "deleted and re-created") {
				t.Fatalf("Flush after the task was replaced = %v, want ErrTaskReplaced", err)
			}
			for _, want := range []string{string(old.UID), string(nt.UID), old.Namespace + "/" + old.Name} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			}
			atRefusal := reqs.total()

			// Updates keep being accepted, without blocking, over several intervals; nothing
			// more goes out.
			start := time.Now()
			for i := range 20 {
				for j := range 10_000 {
					r.Set("upload", int64(i*10_000+j), 1_000_000)
					r.Add("upload_count", 1)
				}
				time.Sleep(interval / 4)
			}
			if took := time.Since(start); took > 20*interval {
				t.Errorf("400,000 updates took %s: something waited", took)
			}
			if err := flush(r); !errors.Is(err, progress.ErrTaskReplaced) {
				t.Errorf("second Flush = %v, want ErrTaskReplaced", err)
			}
			if !errors.Is(r.Err(), progress.ErrTaskReplaced) {
				t.Errorf("Err = %v, want ErrTaskReplaced", r.Err())
			}
			err = closeWithin(t, r, 30*time.Second)
			if !errors.Is(err, progress.ErrTaskReplaced) || !strings.Contains(err.Error(), "deleted and re-created") {
				t.Errorf("Close = %v, want ErrTaskReplaced", err)
			}
			after := reqs.total() - atRefusal
			t.Logf("status requests: %d GET, %d PATCH in all; %d after the refusal", reqs.gets.Load(), reqs.patches.Load(), after)
			if after > 2 {
				t.Errorf("%d status requests after the refusal, want at most 2", after)
			}
			if n := logged.Load(); n != 1 {
				t.Errorf("the replacement was logged %d times, want once", n)
			}
			if e := progressOf(g, nt); len(e) != 0 {
				t.Errorf("the new task got progress: %+v", e)
			}
		})
	}
}

// The task replaced between the reporter's read (old task: UID fine) and its apply: the apply
// is conditioned on the resourceVersion read, so it is refused (409), the reporter reads again
// and stops; the new task gets nothing.
func TestReporterTaskReplacedBetweenReadAndWrite(t *testing.T) {
	old := newTask(t, "race")
	runner := runnerConfig(t, old)
	cfg, reqs := countStatusRequests(runner)
	r, err := progress.New(progress.Options{Config: cfg, Namespace: old.Namespace, Task: old.Name, UID: old.UID, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var (
		nt       *workflowv1alpha1.WorkflowTask
		hookErr  error
		hookDone = make(chan struct{})
	)
	hook := func() {
		defer close(hookDone)
		nt, hookErr = replaceTask(context.Background(), old, runner)
	}
	reqs.beforePatch.Store(&hook)
	r.Set("upload", 5, 10)
	err = flush(r)
	<-hookDone
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	if e := progressOf(gomega.NewWithT(t), nt); len(e) != 0 {
		t.Errorf("the new task got progress: %+v", e)
	}
	if !errors.Is(err, progress.ErrTaskReplaced) || !apierrors.IsConflict(err) {
		t.Fatalf("Flush = %v, want ErrTaskReplaced wrapping the API server's 409", err)
	}
	t.Logf("Flush: %v", err)
	if err := closeWithin(t, r, 10*time.Second); !errors.Is(err, progress.ErrTaskReplaced) {
		t.Errorf("Close = %v, want ErrTaskReplaced", err)
	}
}

// uidEnv is runnerEnv with WORKFLOWTASK_UID.
func uidEnv(t *testing.T, task *workflowv1alpha1.WorkflowTask, uid types.UID) []string {
	return append(runnerEnv(t, task), workflowv1alpha1.EnvTaskUID+"="+string(uid))
}

// The CLI in a pod of a task that was deleted and re-created: set, add, delete and file each
// exit 1 saying so, and write nothing. With the new task's UID they write (positive control).
func TestCLITaskReplaced(t *testing.T) {
	old := newTask(t, "cli-replaced")
	env := uidEnv(t, old, old.UID)
	if code, stderr := runCLI(t, env, "set", "indexed", "1/4"); code != 0 { // positive control
		t.Fatalf("set on the pod's own task: exit %d: %s", code, stderr)
	}
	nt := mustReplace(t, old, runnerConfig(t, old))
	g := gomega.NewWithT(t)

	for name, args := range map[string][]string{
		"set":                        {"set", "upload", "5/10", "/dst/a"},
		"set current only":           {"set", "upload", "5"},
		"add":                        {"add", "upload_count", "1"},
		"delete":                     {"delete", "indexed"},
		"--uid overrides the env":    {"--uid", string(old.UID), "set", "upload", "5/10"},
		"delete of a missing type":   {"delete", "never_written"},
		"set with an identifier too": {"set", "upload", "5/10", "x"},
	} {
		t.Run(name, func(t *testing.T) {
			e := env
			if name == "--uid overrides the env" {
				e = uidEnv(t, old, nt.UID)
			}
			code, stderr := runCLI(t, e, args...)
			if code != 1 || !strings.Contains(stderr, old.Namespace+"/"+old.Name+" "+replacedMsg) {
				t.Errorf("exit %d, stderr %q; want exit 1 with %q", code, stderr, replacedMsg)
			}
		})
	}
	t.Run("file", func(t *testing.T) {
		code, stderr := runFileMode(t, env, "upload 1/10", "upload_count 2/3", "delete indexed")
		if code != 1 || !strings.Contains(stderr, replacedMsg) {
			t.Errorf("file mode: exit %d, stderr %q; want exit 1 with %q", code, stderr, replacedMsg)
		}
	})
	if e := progressOf(g, nt); len(e) != 0 {
		t.Fatalf("the new task got progress: %+v", e)
	}

	// delete with the old UID leaves the new task's entry alone.
	r, err := progress.New(progress.Options{Config: runnerConfig(t, old), Namespace: nt.Namespace, Task: nt.Name, UID: nt.UID, FieldManager: "workflowtask-progress/new-pod"})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("indexed", 3, 4)
	if err := closeWithin(t, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runCLI(t, env, "delete", "indexed"); code != 1 || !strings.Contains(stderr, replacedMsg) {
		t.Errorf("delete: exit %d, stderr %q", code, stderr)
	}
	if e := progressOf(g, nt); len(e) != 1 || e["indexed"].Current != 3 {
		t.Errorf("new task after delete with the old UID: %+v", e)
	}

	// Positive control: with the new task's UID, everything writes.
	newEnv := uidEnv(t, nt, nt.UID)
	for _, args := range [][]string{{"set", "upload", "5/10", "/dst/a"}, {"add", "upload_count", "2"}, {"delete", "indexed"}} {
		if code, stderr := runCLI(t, newEnv, args...); code != 0 {
			t.Errorf("%v with the task's UID: exit %d: %s", args, code, stderr)
		}
	}
	if code, stderr := runFileMode(t, newEnv, "imported 7/9"); code != 0 {
		t.Errorf("file mode with the task's UID: exit %d: %s", code, stderr)
	}
	e := progressOf(g, nt)
	if _, ok := e["indexed"]; ok || e["upload"].Current != 5 || e["upload_count"].Current != 2 || e["imported"].Current != 7 {
		t.Errorf("new task after writes with its UID: %+v", e)
	}
}

// runFileMode runs file mode on a file holding lines, lets it write for a while, and stops it
// with SIGTERM.
func runFileMode(t *testing.T, env []string, lines ...string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "progress")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cli(t), "--interval", "100ms", "--timeout", "10s", "file", path)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // several intervals
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, stderr.String()
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("file mode did not exit after SIGTERM; stderr:\n%s", stderr.String())
	}
	return -1, ""
}

// replacingProxy is a proxy in front of the API server that replaces the task just before it
// forwards the first status PATCH: the CLI has read the old task (its UID was fine) and its
// write then meets the new one.
type replacingProxy struct {
	srv     *httptest.Server
	mu      sync.Mutex
	replace func() error
	err     error
	newTask *workflowv1alpha1.WorkflowTask
}

func newReplacingProxy(t *testing.T, old *workflowv1alpha1.WorkflowTask, runner *rest.Config, after func(*workflowv1alpha1.WorkflowTask) error) *replacingProxy {
	t.Helper()
	target, err := url.Parse(adminCfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := rest.TransportFor(rest.AnonymousClientConfig(adminCfg)) // the API server's CA, the client's own token
	if err != nil {
		t.Fatal(err)
	}
	p := &replacingProxy{}
	p.replace = func() error {
		nt, err := replaceTask(context.Background(), old, runner)
		if err == nil && after != nil {
			err = after(nt)
		}
		p.newTask = nt
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = rt
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/status") {
			p.mu.Lock()
			if p.replace != nil {
				p.err, p.replace = p.replace(), nil
			}
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func pemCert(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// result is what the replacement did, once the CLI has exited.
func (p *replacingProxy) result() (*workflowv1alpha1.WorkflowTask, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newTask, p.err
}

// env is runnerEnv with the proxy as the server, and WORKFLOWTASK_UID.
func (p *replacingProxy) env(t *testing.T, task *workflowv1alpha1.WorkflowTask) []string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: p.srv.URL, CertificateAuthorityData: pemCert(p.srv)}
	kc.AuthInfos["runner"] = &clientcmdapi.AuthInfo{Token: runnerConfig(t, task).BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "runner"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return append(uidEnv(t, task, task.UID), "KUBECONFIG="+path)
}

// The task replaced between the CLI's read and its write: set and add (applies conditioned on
// the resourceVersion read) and delete (a JSON patch testing /metadata/uid) are refused, read
// again, and exit 1; the new task keeps exactly what its own writer put there, even an entry
// of the same type at the same index as the one delete meant.
func TestCLITaskReplacedBetweenReadAndWrite(t *testing.T) {
	for name, args := range map[string][]string{
		"set":    {"set", "upload", "5/10", "/dst/a"},
		"add":    {"add", "upload", "1"},
		"delete": {"delete", "upload"},
	} {
		t.Run(name, func(t *testing.T) {
			old := newTask(t, "cli-race")
			runner := runnerConfig(t, old)
			r, err := progress.New(progress.Options{Config: runner, Namespace: old.Namespace, Task: old.Name, UID: old.UID})
			if err != nil {
				t.Fatal(err)
			}
			r.Set("upload", 1, 10) // the old task's entry, which delete means
			if err := closeWithin(t, r, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			// The new task's own writer puts an entry of the same type at the same index.
			p := newReplacingProxy(t, old, runner, func(nt *workflowv1alpha1.WorkflowTask) error {
				r, err := progress.New(progress.Options{Config: runner, Namespace: nt.Namespace, Task: nt.Name, UID: nt.UID, FieldManager: "workflowtask-progress/new-pod"})
				if err != nil {
					return err
				}
				r.Set("upload", 7, 7)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return r.Close(ctx)
			})
			env := p.env(t, old)
			code, stderr := runCLI(t, env, args...)
			nt, err := p.result()
			if err != nil || nt == nil {
				t.Fatalf("replacing the task: %v (did the CLI write at all? exit %d: %s)", err, code, stderr)
			}
			if code != 1 || !strings.Contains(stderr, replacedMsg) {
				t.Errorf("exit %d, stderr %q; want exit 1 with %q", code, stderr, replacedMsg)
			}
			t.Logf("stderr: %s", stderr)
			e := progressOf(gomega.NewWithT(t), nt)
			if len(e) != 1 || e["upload"].Current != 7 || e["upload"].Total != 7 || e["upload"].Identifier != "" {
				t.Errorf("the new task's progress = %+v, want only its own upload 7/7", e)
			}
		})
	}
}
