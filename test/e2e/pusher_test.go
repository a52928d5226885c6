package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// pusher pushes one entry of a task's progress as the task's pod's reporter does: a PUT of its
// whole state (ingest.Push) with a projected token of the task's runner for the ingest audience,
// bound to a running pod of the task's Job, verifying the endpoint with the operator's CA bundle.
// It pushes every interval; a refused push (an error envelope, or no answer) is followed, after
// Retry-After (else the interval), by the whole state again.
type pusher struct {
	url, path string // the push URL (through the Service) and its path
	token     string
	taskUID   types.UID
	entryType string
	interval  time.Duration
	client    *http.Client
	current   atomic.Int64 // the state pushed

	mu     sync.Mutex
	pushes []pushed
}

// pushed is one push and how it was answered.
type pushed struct {
	current int64
	code    int // the envelope's code; -1: no answer (the connection failed)
	msg     string
	header  http.Header
	closed  bool // the answer closed the connection (Connection: close)
}

// ok is a push the endpoint took.
func (p pushed) ok() bool { return p.code == 0 }

// newPusher is a pusher of task's pod to base (the ingest Service's URL), with a token bound to
// pod, verifying the serving certificate for serverName.
func newPusher(t *testing.T, base, serverName string, task *workflowv1alpha1.WorkflowTask, pod *corev1.Pod, entryType string) *pusher {
	t.Helper()
	ctx := context.Background()
	token, err := kubeauth.Token(ctx, kubernetes.NewForConfigOrDie(cluster.Admin), task.Namespace, task.Name+"-runner",
		kubeauth.TokenOptions{Audiences: []string{ingest.Audience}, BoundTo: kubeauth.BoundToPod(pod)})
	if err != nil {
		t.Fatal(err)
	}
	bundle := &corev1.ConfigMap{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "workflowtask-system", Name: servingcert.DefaultBundleConfigMap}, bundle); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(bundle.Data["ca.crt"])) {
		t.Fatalf("no CA in %s", servingcert.DefaultBundleConfigMap)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}}
	t.Cleanup(transport.CloseIdleConnections)
	path := ingest.Path(task.Namespace, task.Name)
	return &pusher{url: base + path, path: path, token: token, taskUID: task.UID, entryType: entryType,
		interval: time.Second, client: &http.Client{Transport: transport, Timeout: 10 * time.Second}}
}

// run pushes until ctx ends.
func (p *pusher) run(ctx context.Context) {
	for {
		r := p.push(ctx, p.url)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.pushes = append(p.pushes, r)
		p.mu.Unlock()
		wait := p.interval
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err == nil && !r.ok() {
			wait = time.Duration(s) * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// push sends the whole state once to url (p's, or one replica's own).
func (p *pusher) push(ctx context.Context, url string) pushed {
	current := p.current.Load()
	body, err := json.Marshal(ingest.Push{TaskUID: p.taskUID, Entries: []workflowv1alpha1.ProgressEntry{{Type: p.entryType, Current: current, Total: 1 << 20}}})
	if err != nil {
		return pushed{current: current, code: -1, msg: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return pushed{current: current, code: -1, msg: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return pushed{current: current, code: -1, msg: err.Error(), header: http.Header{}}
	}
	defer func() { _ = resp.Body.Close() }()
	var envelope struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&envelope); err != nil {
		return pushed{current: current, code: -1, msg: fmt.Sprintf("HTTP %d: %v", resp.StatusCode, err), header: resp.Header}
	}
	return pushed{current: current, code: envelope.Code, msg: envelope.Msg, header: resp.Header, closed: resp.Close}
}

// mark is the number of pushes so far: since(mark) are those after it.
func (p *pusher) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pushes)
}

// since are the pushes after a mark.
func (p *pusher) since(mark int) []pushed {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pushed(nil), p.pushes[mark:]...)
}

// count is how many of ps are taken (ok) or not.
func count(ps []pushed, ok bool) int {
	n := 0
	for _, r := range ps {
		if r.ok() == ok {
			n++
		}
	}
	return n
}
