package attack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// saUser is a ServiceAccount with a real token: its username is system:serviceaccount:ns:name.
type saUser struct{ ns, sa, name, token string }

func newSAUser(t testing.TB, ns, name string) saUser {
	t.Helper()
	_, token, err := testenv.ServiceAccountConfig(context.Background(), adminCfg, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return saUser{ns: ns, sa: name, name: "system:serviceaccount:" + ns + ":" + name, token: token}
}

// freshToken is a new token of u (TokenRequest): one the endpoint has never seen.
func (u saUser) freshToken(t testing.TB) string {
	t.Helper()
	token, err := testenv.Token(context.Background(), adminCfg, u.ns, u.sa)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// createTask creates a task owned by owner with one progress entry and waits until the
// manager's cache (the endpoint's) has it; it returns the task's progress path.
func createTask(t testing.TB, name string, owner saUser) string {
	t.Helper()
	return readPath(createTaskObject(t, name, owner))
}

// readPath is the path of task's progress on the endpoint (GET /workflow/progress/{id}).
func readPath(task *workflowv1alpha1.WorkflowTask) string {
	return "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
}

// createTaskObject is createTask, returning the task.
func createTaskObject(t testing.TB, name string, owner saUser) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	ctx := context.Background()
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, "attack", "ns-creator"); err != nil { // the namespace
		t.Fatal(err)
	}
	task := testutil.MakeTask(name, "attack").Owner(owner.name).Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() error { // again when the controller wrote meanwhile
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task); err != nil {
			return err
		}
		task.Status.Progress = []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 1, Total: 2}}
		return k8sClient.Status().Update(ctx, task)
	}).Should(gomega.Succeed(), "the task's first progress")
	gomega.NewWithT(t).Eventually(func() int {
		got := &workflowv1alpha1.WorkflowTask{}
		_ = mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(task), got)
		return len(got.Status.Progress)
	}).Should(gomega.Equal(1), "the task reaches the endpoint's cache")
	return task
}

// bindMetricsReader binds config/rbac's metrics-reader ClusterRole to monitoring/prometheus, as
// config/prometheus asks.
func bindMetricsReader(ctx context.Context) {
	root, _ := testenv.RepoRoot()
	objs, err := testenv.ReadObjects(filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml"))
	if err != nil || len(objs) != 1 {
		panic(fmt.Sprint("reading the metrics-reader role: ", err))
	}
	testenv.Prefixed(objs[0])
	_ = k8sClient.Create(ctx, objs[0])
	_ = k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "attack-prometheus-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: objs[0].GetName()},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "monitoring", Name: "prometheus"}},
	})
}

// answer is what a listener said: the HTTP status and the body (an error: no answer).
type answer struct {
	status int
	body   []byte
	err    error
}

// send sends one GET of url from client with header pairs.
func send(client *http.Client, url string, header ...string) answer {
	return sendRequest(client, http.MethodGet, url, nil, header...)
}

// sendRequest sends one request of method to url from client, with body (nil: none) and header
// pairs.
func sendRequest(client *http.Client, method, url string, body []byte, header ...string) answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return answer{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: got, err: err}
}

// code is the progress envelope's code (0 for a success body), -1 when it is not one.
func (a answer) code() int {
	if a.err != nil || a.status != http.StatusOK {
		return -1
	}
	var env struct {
		Code *int            `json:"code"`
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(a.body, &env) != nil || env.Code == nil {
		return -1
	}
	return *env.Code
}

func junkJWT(i, size int) string { return testenv.JunkJWT(i, size) }

var (
	forgeOnce sync.Once
	forger    *testenv.Forger
)

// forgedToken claims to be the cluster's (its issuer, key ID, audience, a ServiceAccount
// subject, current times), is unique each call, and is signed by a key the cluster never had.
func forgedToken(t testing.TB) string {
	t.Helper()
	forgeOnce.Do(func() {
		var err error
		if forger, err = testenv.NewForger(context.Background(), adminCfg, "attack", "forge-template"); err != nil {
			t.Fatal(err)
		}
	})
	token, err := forger.Token("")
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// flood sends n GETs made by header(i) to url from client, `workers` at a time, and returns the
// answers.
func flood(client *http.Client, url string, n, workers int, header func(i int) []string) []answer {
	return floodRequests(client, http.MethodGet, url, nil, n, workers, header)
}

// floodRequests sends n requests of method with body made by header(i) to url from client,
// `workers` at a time, and returns the answers.
func floodRequests(client *http.Client, method, url string, body []byte, n, workers int, header func(i int) []string) []answer {
	out := make([]answer, n)
	work := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				out[i] = sendRequest(client, method, url, body, header(i)...)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return out
}

var nextAddress atomic.Int32

// freshAddress is a loopback address no other test uses (each has its own budgets).
func freshAddress() net.IP {
	n := nextAddress.Add(1)
	return net.IPv4(127, 20, byte(n/250), byte(n%250+1))
}

// settled waits until the process's goroutines are back to within slack of baseline (the
// attack's connections, streams and handlers all ended).
func settled(t testing.TB, baseline, slack int) {
	t.Helper()
	gomega.NewWithT(t).Eventually(runtime.NumGoroutine, 30*time.Second, 100*time.Millisecond).
		Should(gomega.BeNumerically("<=", baseline+slack), "goroutines back to the baseline")
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// closeIdle drops the idle connections of every client of the suite.
func closeIdle() {
	byAddress.Range(func(_, v any) bool {
		v.(*http.Client).CloseIdleConnections()
		return true
	})
}
