package endpoint_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

var (
	ingestOnce sync.Once
	ingestURL  string
)

// ingestFlushInterval is the ingest endpoint's flush interval in these tests, and
// ingestAuthCacheTTL its cache TTL (short: a pod's token must outlive it in the cache).
const (
	ingestFlushInterval = 2 * time.Second
	ingestAuthCacheTTL  = time.Second
)

// ingestEndpoint is an endpoint with --progress-ingest on the suite's manager (its flusher runs:
// the suite's manager elects no leader).
func ingestEndpoint(t *testing.T) string {
	t.Helper()
	ingestOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts := apiserver.NewOptions()
		opts.BindAddress = ln.Addr().String()
		opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
		opts.Ingest, opts.FlushInterval, opts.WriteBudget = true, ingestFlushInterval, 50
		opts.AuthCacheTTL = ingestAuthCacheTTL
		if _, err := apiserver.SetupWithManager(context.Background(), mgr, opts, func(c *apiserver.Config) {
			c.Listener = ln
			c.ReviewConfig = countTokenReviews(c.ReviewConfig)
		}); err != nil {
			t.Fatal(err)
		}
		ingestURL = "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	})
	return ingestURL
}

// runningPod is a running pod of task's Job with a token of the task's runner bound to it for
// audiences (none: the ingest audience).
func runningPod(t *testing.T, task *workflowv1alpha1.WorkflowTask, name string, audiences ...string) (*corev1.Pod, string) {
	t.Helper()
	pod := testenv.RunningTaskPod(t, k8sClient, task, name)
	if len(audiences) == 0 {
		audiences = []string{ingest.Audience}
	}
	return pod, testenv.PodToken(t, adminCfg, pod, audiences...)
}

// pushTo sends a push of task namespace/name with token from client and returns the envelope's code.
func pushTo(t *testing.T, c *http.Client, base, namespace, name, token string, body any) int {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, base+ingest.Path(namespace, name), bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	return callRequest(t, c, req)
}

// A pod of the task pushes with its projected token for the ingest audience: the owner sees the
// values at once through the endpoint, and the operator writes them to the status under its own
// field manager within the flush interval; a pod's last values (final) are written at once.
func TestIngestPush(t *testing.T) {
	base := ingestEndpoint(t)
	owner := newSAUser(t, "users", "ingest-owner")
	task := createTaskWithProgress(t, testutil.MakeTask("pushed", "ingest").Owner(owner.name))
	_, token := runningPod(t, task, "pushed-abcde")
	httpc := clientFor(t)
	push := ingest.Push{TaskUID: task.UID, Entries: []workflowv1alpha1.ProgressEntry{
		{Type: "upload", Current: 5, Total: 10, UpdateTime: ptr.To(metav1.NewMicroTime(time.Now()))}}}
	if code := pushTo(t, httpc, base, task.Namespace, task.Name, token, push); code != apiserver.CodeSuccess {
		t.Fatalf("push: code %d", code)
	}
	// At once on the endpoint that took it, from the live values (the status has none yet).
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+owner.token)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Data map[string]struct{ Current, Total int64 } `json:"data"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Data["upload"].Current != 5 {
		t.Errorf("the endpoint right after the push: %+v, want upload 5/10", got.Data)
	}
	// In the status within the flush interval, under the operator's field manager.
	stored := func() *workflowv1alpha1.WorkflowTask {
		tk := &workflowv1alpha1.WorkflowTask{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), tk); err != nil {
			t.Fatal(err)
		}
		return tk
	}
	gomega.NewWithT(t).Eventually(func() []workflowv1alpha1.ProgressEntry { return stored().Status.Progress }, 3*ingestFlushInterval).
		Should(gomega.ContainElement(gomega.HaveField("Current", int64(5))), "written to the status")
	managers := map[string]bool{}
	for _, f := range stored().ManagedFields {
		if f.Subresource == "status" {
			managers[f.Manager] = true
		}
	}
	if !managers[apiserver.IngestFieldManager] {
		t.Errorf("status field managers %v, want %s", managers, apiserver.IngestFieldManager)
	}
	// The last values (Close) are written without waiting for the interval.
	push.Entries[0].Current, push.Final = 10, true
	if code := pushTo(t, httpc, base, task.Namespace, task.Name, token, push); code != apiserver.CodeSuccess {
		t.Fatalf("final push: code %d", code)
	}
	gomega.NewWithT(t).Eventually(func() []workflowv1alpha1.ProgressEntry { return stored().Status.Progress }, ingestFlushInterval/2).
		Should(gomega.ContainElement(gomega.HaveField("Current", int64(10))), "the final values written at once")
	// With the summary derived from them in the same write: the controller, which paces its
	// summary-only writes (one per task per 5 s), has nothing left to write.
	if got := stored().Status.ProgressSummary; got != "100%" {
		t.Errorf("progressSummary %q with the final values, want 100%% in the same write", got)
	}
}

// Hostile pushes, each answered with the spec's envelope and nothing kept: a token for another
// audience, a pod of another task, a replaced task, malformed and oversized bodies, other methods
// and paths, a deleted pod's token, a pod flooding its own task.
func TestIngestRefusals(t *testing.T) {
	base := ingestEndpoint(t)
	owner := newSAUser(t, "users", "ingest-owner")
	taskA := createTaskWithProgress(t, testutil.MakeTask("task-a", "ingest").Owner(owner.name))
	taskB := createTaskWithProgress(t, testutil.MakeTask("task-b", "ingest").Owner(owner.name))
	podA, tokenA := runningPod(t, taskA, "task-a-xyz12")
	_, wrongAudience := runningPod(t, taskA, "task-a-other", "https://kubernetes.default.svc")
	httpc := clientFor(t)
	entries := []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 1, Total: 2}}
	good := ingest.Push{TaskUID: taskA.UID, Entries: entries}

	cases := []struct {
		name      string
		ns, task  string
		token     string
		body      any
		wantCode  int
		wantFirst bool
	}{
		{name: "a token for kube-apiserver's audience", ns: taskA.Namespace, task: taskA.Name, token: wrongAudience, body: good, wantCode: apiserver.CodeLoginRequired},
		{name: "task A's pod writing to task B", ns: taskB.Namespace, task: taskB.Name, token: tokenA, body: ingest.Push{TaskUID: taskB.UID, Entries: entries}, wantCode: apiserver.CodeNoPermission},
		{name: "the task replaced (another UID)", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: ingest.Push{TaskUID: "not-the-uid", Entries: entries}, wantCode: apiserver.CodeConflict},
		{name: "an invalid type", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: ingest.Push{TaskUID: taskA.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "Upload!"}}}, wantCode: apiserver.CodeParamErr},
		{name: "negative current", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: ingest.Push{TaskUID: taskA.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: -1}}}, wantCode: apiserver.CodeParamErr},
		{name: "not JSON", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: []byte("{"), wantCode: apiserver.CodeParamErr},
		{name: "an unknown field", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: []byte(`{"taskUID":"` + string(taskA.UID) + `","entries":[],"owner":"mallory"}`), wantCode: apiserver.CodeParamErr},
		{name: "oversized", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: []byte(`{"taskUID":"` + string(taskA.UID) + `","entries":[{"type":"upload","current":1,"total":1,"identifier":"` + strings.Repeat("x", ingest.MaxBodyBytes) + `"}]}`), wantCode: apiserver.CodeParamErr},
		{name: "too many entries", ns: taskA.Namespace, task: taskA.Name, token: tokenA, body: tooManyEntries(taskA), wantCode: apiserver.CodeParamErr},
	}
	for _, tc := range cases {
		if code := pushTo(t, httpc, base, tc.ns, tc.task, tc.token, tc.body); code != tc.wantCode {
			t.Errorf("%s: code %d, want %d", tc.name, code, tc.wantCode)
		}
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, ingest.Path(taskA.Namespace, taskA.Name)},
		{http.MethodPut, ingest.PathPrefix + "namespaces/" + taskA.Namespace + "/workflowtasks/" + taskA.Name},
		{http.MethodPut, ingest.Path(taskA.Namespace, taskA.Name) + "/x"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+tokenA)
		if code := callRequest(t, httpc, req); code != apiserver.CodeMethod && code != apiserver.CodeNotFound {
			t.Errorf("%s %s: code %d", tc.method, tc.path, code)
		}
	}
	// One-entry changes (PATCH) are held to the same rules (from another pod of task A: the
	// pushes above, refused ones too, spent the first pod's budget).
	_, tokenA2 := runningPod(t, taskA, "task-a-patcher")
	for name, tc := range map[string]struct {
		body string
		want int
	}{
		"set and add at once": {`{"taskUID":"` + string(taskA.UID) + `","type":"upload","current":1,"add":1}`, apiserver.CodeParamErr},
		"an unknown field":    {`{"taskUID":"` + string(taskA.UID) + `","type":"upload","add":1,"owner":"mallory"}`, apiserver.CodeParamErr},
		"another UID":         {`{"taskUID":"not-the-uid","type":"upload","add":1}`, apiserver.CodeConflict},
	} {
		req, _ := http.NewRequest(http.MethodPatch, base+ingest.Path(taskA.Namespace, taskA.Name), strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+tokenA2)
		if code := callRequest(t, httpc, req); code != tc.want {
			t.Errorf("PATCH %s: code %d, want %d", name, code, tc.want)
		}
	}
	// Task B's status got nothing from task A's pod.
	time.Sleep(ingestFlushInterval + time.Second)
	b := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(taskB), b); err != nil || len(b.Status.Progress) != 0 {
		t.Errorf("task B's progress %+v (%v): a foreign pod's push was kept", b.Status.Progress, err)
	}
	// A pod flooding its own task: 429 after its burst.
	tooMany := 0
	for i := range 30 {
		p := ingest.Push{TaskUID: taskA.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: int64(i), Total: 100}}}
		if pushTo(t, httpc, base, taskA.Namespace, taskA.Name, tokenA, p) == apiserver.CodeTooMany {
			tooMany++
		}
	}
	if tooMany == 0 {
		t.Error("30 pushes at once from one pod: none answered 429")
	}
	// A deleted pod's token stops working (TokenReview refuses a token whose pod is gone, once
	// the endpoint's cache of it expires).
	if err := k8sClient.Delete(context.Background(), podA, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() int {
		return pushTo(t, httpc, base, taskA.Namespace, taskA.Name, tokenA, good)
	}, 30*time.Second, time.Second).Should(gomega.BeElementOf(apiserver.CodeLoginRequired, apiserver.CodeNoPermission), "a deleted pod's token refused")
}

func tooManyEntries(task *workflowv1alpha1.WorkflowTask) ingest.Push {
	p := ingest.Push{TaskUID: task.UID}
	for i := range ingest.MaxEntries + 1 {
		p.Entries = append(p.Entries, workflowv1alpha1.ProgressEntry{Type: fmt.Sprintf("upload_single_%d", i)})
	}
	return p
}

// validateIngestBody checks an ingest answer: the endpoint's envelope, with the ingest.Ack as a
// success's data, nothing else.
func validateIngestBody(t testing.TB, body []byte) {
	t.Helper()
	var env struct {
		Data          *ingest.Ack `json:"data"`
		Code          *int        `json:"code"`
		Msg           string      `json:"msg"`
		Error         string      `json:"error"`
		CorrelationID string      `json:"correlation_id"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || env.Code == nil || (*env.Code == 0) != (env.Data != nil) || *env.Code != 0 && env.CorrelationID == "" {
		t.Errorf("ingest answer %s: not the envelope with an ack (success) or a correlation ID (error): %v", body, err)
	}
}

// A push reaches an open event stream at once, as a new event equal to what a GET answers then
// (the live values, before any status write); so does a one-entry change.
func TestIngestPushReachesStreams(t *testing.T) {
	base := ingestEndpoint(t)
	owner := newSAUser(t, "users", "ingest-streamer")
	task := createTaskWithProgress(t, testutil.MakeTask("pushed-streamed", "ingest").Owner(owner.name))
	_, token := runningPod(t, task, "pushed-streamed-abcde")
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	httpc := clientFor(t)
	s, plain := openStream(t, httpc, base+path, owner.token)
	if s == nil {
		t.Fatalf("no stream: %s", plain)
	}
	s.nextData(t) // the state before
	getNow := func() string {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+owner.token)
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for i := int64(1); i <= 3; i++ {
		push := ingest.Push{TaskUID: task.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: i, Total: 10}}}
		if code := pushTo(t, httpc, base, task.Namespace, task.Name, token, push); code != apiserver.CodeSuccess {
			t.Fatalf("push %d: code %d", i, code)
		}
		got := s.nextData(t)
		if want := getNow(); got != want || !strings.Contains(got, `"current":`+strconv.FormatInt(i, 10)) {
			t.Errorf("event after push %d: %s, GET %s", i, got, want)
		}
	}
	req, _ := http.NewRequest(http.MethodPatch, base+ingest.Path(task.Namespace, task.Name),
		strings.NewReader(`{"taskUID":"`+string(task.UID)+`","type":"upload_count","add":2}`))
	req.Header.Set("Authorization", "Bearer "+token)
	if code := callRequest(t, httpc, req); code != apiserver.CodeSuccess {
		t.Fatalf("PATCH: code %d", code)
	}
	if got := s.nextData(t); !strings.Contains(got, `"upload_count":{"total":0,"current":2`) {
		t.Errorf("event after a one-entry change: %s", got)
	}
}

// A pod's token costs one TokenReview in its life, however long the pod keeps pushing: it is
// remembered until it expires, not for the cache TTL (what kube-apiserver's cost per writer
// rests on); its pod is checked against the cache on every push instead.
func TestIngestOneReviewPerToken(t *testing.T) {
	base := ingestEndpoint(t)
	owner := newSAUser(t, "users", "ingest-reviews")
	task := createTaskWithProgress(t, testutil.MakeTask("reviewed", "ingest").Owner(owner.name))
	_, token := runningPod(t, task, "reviewed-abcde")
	httpc := clientFor(t)
	before := tokenReviews.Load()
	for i := range 4 {
		push := ingest.Push{TaskUID: task.UID, Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: int64(i), Total: 10}}}
		if code := pushTo(t, httpc, base, task.Namespace, task.Name, token, push); code != apiserver.CodeSuccess {
			t.Fatalf("push %d: code %d", i, code)
		}
		time.Sleep(ingestAuthCacheTTL + 200*time.Millisecond) // past the cache TTL each time
	}
	if n := tokenReviews.Load() - before; n != 1 {
		t.Errorf("%d TokenReviews for one pod token pushing 4 times over %s; want 1", n, 4*(ingestAuthCacheTTL+200*time.Millisecond))
	}
}
