package endpoint_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var (
	clientsMu  sync.Mutex
	clients    = map[string]*http.Client{}
	nextClient = 1
)

// clientFor is the HTTP client of a test (its top-level name): each test calls from an address
// of its own (127.0.1.N), as the endpoint counts failed logins per client address and one
// test's refused tokens must not spend another's budget.
func clientFor(t testing.TB) *http.Client {
	clientsMu.Lock()
	defer clientsMu.Unlock()
	name, _, _ := strings.Cut(t.Name(), "/")
	if c, ok := clients[name]; ok {
		return c
	}
	c := clientFrom(net.IPv4(127, 0, 1, byte(nextClient)))
	nextClient++
	clients[name] = c
	return c
}

var byAddress sync.Map // ip string → *http.Client

// clientFrom is the HTTP client whose connections come from ip (any 127/8 address is local),
// one per address so that its connections are reused. It does not verify the endpoint's
// certificate (the tests in tls_test.go do, and so does kube-apiserver on the aggregated path):
// a CA renewal in the middle of the suite must not fail the other tests' direct calls.
func clientFrom(ip net.IP) *http.Client {
	c, _ := byAddress.LoadOrStore(ip.String(), &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test endpoint
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext,
	}})
	return c.(*http.Client)
}

// get calls the endpoint directly and returns the HTTP status and body, checking the body
// against the seed's schemas.
func get(t testing.TB, method, path, token string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, endpointURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := clientFor(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: HTTP %d %s", method, path, resp.StatusCode, body)
	}
	if method != http.MethodHead && resp.StatusCode == http.StatusOK { // our answers; not net/http's own 4xx
		validateBody(t, body)
	}
	return resp.StatusCode, body
}

// saUser is a ServiceAccount with a real token: its username is system:serviceaccount:ns:name.
type saUser struct {
	name, token string
}

func newSAUser(t testing.TB, ns, name string) saUser {
	t.Helper()
	_, token, err := testenv.ServiceAccountConfig(context.Background(), adminCfg, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return saUser{name: "system:serviceaccount:" + ns + ":" + name, token: token}
}

// createTaskWithProgress creates a task (as admin) and writes its progress (as a reporter
// would), waiting until the endpoint's cache has the task with its ID.
func createTaskWithProgress(t testing.TB, w *testutil.TaskWrapper, entries ...workflowv1alpha1.ProgressEntry) *workflowv1alpha1.WorkflowTask {
	t.Helper()
	ctx := context.Background()
	task := w.Obj()
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, task.Namespace, "ns-creator"); err != nil { // the namespace
		t.Fatal(err)
	}
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		task.Status.Progress = entries
		if err := k8sClient.Status().Update(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := &workflowv1alpha1.WorkflowTask{}
		if err := mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(task), got); err == nil && len(got.Status.Progress) == len(entries) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s never reached the endpoint's cache", task.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func entry(typ string, current, total int64, id string) workflowv1alpha1.ProgressEntry {
	return workflowv1alpha1.ProgressEntry{Type: typ, Current: current, Total: total, Identifier: id, UpdateTime: ptr.To(metav1.NewMicroTime(time.Now()))}
}

var (
	forgeOnce sync.Once
	forger    *testenv.Forger
)

// forgedToken is a token that claims to be the cluster's (its issuer, key ID, audience and a
// ServiceAccount subject users/name, current times), unique each call, signed by a key the
// cluster never had: the endpoint refuses it without a review once it holds the issuer's keys.
func forgedToken(t testing.TB, name string) string {
	t.Helper()
	forgeOnce.Do(func() {
		var err error
		if forger, err = testenv.NewForger(context.Background(), adminCfg, "users", "forge-template"); err != nil {
			t.Fatal(err)
		}
	})
	token, err := forger.Token("system:serviceaccount:users:" + name)
	if err != nil {
		t.Fatal(err)
	}
	return token
}
