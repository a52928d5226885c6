package endpoint_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// sse is an open event stream: its data events and its comment lines, as they arrive.
type sse struct {
	data     chan string
	comments chan string
	done     chan error // the stream's end (nil: EOF)
	cancel   func()
}

// openStream GETs url with Accept: text/event-stream as token's holder and reads it in the
// background; the first answer must be an event stream (else it returns the body, and nil).
func openStream(t testing.TB, c *http.Client, url, token string) (*sse, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		cancel()
		return nil, string(b)
	}
	s := &sse{data: make(chan string, 100), comments: make(chan string, 100), done: make(chan error, 1), cancel: cancel}
	go readEvents(resp.Body, s)
	t.Cleanup(func() { cancel(); _ = resp.Body.Close() })
	return s, ""
}

func readEvents(body io.Reader, s *sse) {
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data: "):
			s.data <- strings.TrimPrefix(line, "data: ")
		case strings.HasPrefix(line, ":"):
			s.comments <- line
		}
	}
	s.done <- sc.Err()
}

// nextData waits for the stream's next data event.
func (s *sse) nextData(t testing.TB) string {
	t.Helper()
	select {
	case d := <-s.data:
		return d
	case err := <-s.done:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no event within 20 s")
	}
	return ""
}

// setProgress writes a task's progress as its reporter would (server-side apply, as admin).
func setProgress(t testing.TB, task *workflowv1alpha1.WorkflowTask, entries ...workflowv1alpha1.ProgressEntry) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // the controller writes the status too
		got := &workflowv1alpha1.WorkflowTask{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got); err != nil {
			return err
		}
		got.Status.Progress = entries
		return k8sClient.Status().Update(context.Background(), got)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The stream's first event is the plain GET's body, byte for byte; each change of the task's
// progress is a new event equal to what a GET would answer then.
func TestStreamFollowsTheTask(t *testing.T) {
	owner := newSAUser(t, "stream", "alice")
	task := createTaskWithProgress(t, testutil.MakeTask("streamed", "stream").Owner(owner.name), entry("upload", 1, 10, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	_, want := get(t, http.MethodGet, path, owner.token)
	s, plain := openStream(t, clientFor(t), endpointURL+path, owner.token)
	if s == nil {
		t.Fatalf("no stream: %s", plain)
	}
	if got := s.nextData(t); got != string(want) {
		t.Errorf("first event %s, GET %s", got, want)
	}
	for i := int64(2); i <= 4; i++ {
		setProgress(t, task, entry("upload", i, 10, ""))
		got := s.nextData(t)
		_, want := get(t, http.MethodGet, path, owner.token)
		if got != string(want) {
			t.Errorf("event after progress %d: %s, GET %s", i, got, want)
		}
	}
	// The same through the path prefix.
	s2, _ := openStream(t, clientFor(t), endpointURL+"/api/v4"+path, owner.token)
	if s2 == nil || s2.nextData(t) != string(get2(t, path, owner.token)) {
		t.Error("the stream under /api/v4 differs")
	}
}

func get2(t *testing.T, path, token string) []byte {
	_, b := get(t, http.MethodGet, path, token)
	return b
}

// A stranger's stream of an existing task and an owner's stream of an unknown ID are alike:
// one empty body, then heartbeats only — also when the task changes.
func TestStreamStrangerLikeUnknown(t *testing.T) {
	url := startEndpoint(t, func(o *apiserver.Options) { o.StreamHeartbeat = 200 * time.Millisecond })
	owner, stranger := newSAUser(t, "stream2", "alice"), newSAUser(t, "stream2", "bob")
	task := createTaskWithProgress(t, testutil.MakeTask("hidden", "stream2").Owner(owner.name), entry("upload", 1, 10, ""))
	theirs, _ := openStream(t, clientFor(t), url+"/workflow/progress/"+workflowv1alpha1.TaskIDFromUID(task.UID), stranger.token)
	unknown, _ := openStream(t, clientFor(t), url+"/workflow/progress/AAAAAAAAAA", owner.token)
	if theirs == nil || unknown == nil {
		t.Fatal("no stream")
	}
	a, b := theirs.nextData(t), unknown.nextData(t)
	if a != b || a != `{"data":{},"code":0,"msg":""}` {
		t.Errorf("stranger %s, unknown %s", a, b)
	}
	setProgress(t, task, entry("upload", 5, 10, ""))
	deadline := time.After(2 * time.Second)
	heartbeats := 0
	for {
		select {
		case d := <-theirs.data:
			t.Fatalf("the stranger got an event: %s", d)
		case <-theirs.comments:
			heartbeats++
			continue
		case <-deadline:
		}
		break
	}
	if heartbeats < 3 {
		t.Errorf("%d heartbeats in 2 s (every 200 ms)", heartbeats)
	}
}

// Streams are bounded per user: past the bound the answer is the 429 envelope, and another
// user still streams.
func TestStreamLimits(t *testing.T) {
	url := startEndpoint(t, func(o *apiserver.Options) { o.MaxStreamsPerUser = 2 })
	alice, bob := newSAUser(t, "stream3", "alice"), newSAUser(t, "stream3", "bob")
	path := url + "/workflow/progress/AAAAAAAAAA"
	for range 2 {
		if s, body := openStream(t, clientFor(t), path, alice.token); s == nil {
			t.Fatalf("stream refused: %s", body)
		}
	}
	if s, body := openStream(t, clientFor(t), path, alice.token); s != nil || !strings.Contains(body, `"code":429`) {
		t.Errorf("a third stream of alice: %v %s", s != nil, body)
	}
	if s, body := openStream(t, clientFor(t), path, bob.token); s == nil {
		t.Errorf("bob's stream refused: %s", body)
	}
}

// An admin whose permission is taken away stops getting the task's progress within the
// authorization cache's TTL: the stream turns to the empty body, and later changes send nothing.
func TestStreamRevokedAdmin(t *testing.T) {
	url := startEndpoint(t, func(o *apiserver.Options) { o.AuthCacheTTL = time.Second })
	owner, admin := newSAUser(t, "stream4", "alice"), newSAUser(t, "stream4", "carol")
	bindProgressAdmin(t, admin.name, "stream4")
	task := createTaskWithProgress(t, testutil.MakeTask("watched", "stream4").Owner(owner.name), entry("upload", 1, 10, ""))
	g := gomega.NewWithT(t)
	var s *sse
	g.Eventually(func() string { // the binding reaches the authorizer
		var body string
		if s, body = openStream(t, clientFor(t), url+"/workflow/progress/"+workflowv1alpha1.TaskIDFromUID(task.UID), admin.token); s == nil {
			return body
		}
		return s.nextData(t)
	}).Should(gomega.ContainSubstring(`"current":1`))
	if err := k8sClient.Delete(context.Background(), roleBinding("stream4", admin.name)); err != nil {
		t.Fatal(err)
	}
	setProgress(t, task, entry("upload", 2, 10, ""))
	deadline := time.After(15 * time.Second)
	for {
		select {
		case d := <-s.data:
			if d == `{"data":{},"code":0,"msg":""}` {
				setProgress(t, task, entry("upload", 3, 10, ""))
				select {
				case d := <-s.data:
					t.Errorf("data after the revocation: %s", d)
				case <-time.After(3 * time.Second):
				}
				return
			}
		case err := <-s.done:
			t.Fatalf("the stream ended: %v", err)
		case <-deadline:
			t.Fatal("the revoked admin still sees the task after 15 s")
		}
	}
}

// A stream ends cleanly (EOF, not an error) when its server shuts down.
func TestStreamEndsWithTheServer(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	url := startEndpointCtx(ctx, t, func(*apiserver.Options) {})
	owner := newSAUser(t, "stream5", "alice")
	s, body := openStream(t, clientFor(t), url+"/workflow/progress/AAAAAAAAAA", owner.token)
	if s == nil {
		t.Fatalf("no stream: %s", body)
	}
	s.nextData(t)
	stop()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("the stream ended with %v, want EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its server by 10 s")
	}
}

// Through kube-apiserver's aggregation layer the stream works as directly: its first event is
// the aggregated GET's body.
func TestStreamAggregated(t *testing.T) {
	u := certUser(t, "stream-admin", "system:masters")
	task := createTaskWithProgress(t, testutil.MakeTask("agg-streamed", "stream6").Owner("alice"), entry("upload", 7, 10, ""))
	cs, err := kubernetes.NewForConfig(u.Config())
	if err != nil {
		t.Fatal(err)
	}
	path := "/apis/progress.taskops.dev/v1alpha1/namespaces/stream6/tasks/" + task.Name
	want, err := cs.RESTClient().Get().AbsPath(path).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := cs.RESTClient().Get().AbsPath(path).SetHeader("Accept", "text/event-stream").Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	s := &sse{data: make(chan string, 10), comments: make(chan string, 10), done: make(chan error, 1), cancel: cancel}
	go readEvents(rc, s)
	if got := s.nextData(t); got != string(want) {
		t.Errorf("first event %s, aggregated GET %s", got, want)
	}
	setProgress(t, task, entry("upload", 8, 10, ""))
	if got := s.nextData(t); !strings.Contains(got, `"current":8`) {
		t.Errorf("after the change: %s", got)
	}
}

// Hostile stream requests get the plain answers, never a stream: no login, a bad ID, a
// method other than GET, an Accept header that is junk or huge; an event-stream Accept among
// others still streams.
func TestStreamHostileRequests(t *testing.T) {
	owner := newSAUser(t, "stream7", "alice")
	for name, c := range map[string]struct {
		method, path, token, accept string
		wantStream                  bool
		wantCode                    string
	}{
		"no login":          {http.MethodGet, "/workflow/progress/AAAAAAAAAA", "", "text/event-stream", false, `"code":401`},
		"malformed id":      {http.MethodGet, "/workflow/progress/..x", owner.token, "text/event-stream", false, `"code":40001`},
		"HEAD":              {http.MethodHead, "/workflow/progress/AAAAAAAAAA", owner.token, "text/event-stream", false, ""},
		"junk accept":       {http.MethodGet, "/workflow/progress/AAAAAAAAAA", owner.token, "text/event-stream-not;;;", false, `"code":0`},
		"huge accept":       {http.MethodGet, "/workflow/progress/AAAAAAAAAA", owner.token, strings.Repeat("a/b, ", 5000), false, `"code":0`},
		"among other types": {http.MethodGet, "/workflow/progress/AAAAAAAAAA", owner.token, "application/json;q=0.5, text/event-stream", true, ""},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, c.method, endpointURL+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			req.Header.Set("Accept", c.accept)
			resp, err := clientFor(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("HTTP %d", resp.StatusCode)
			}
			streaming := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
			if streaming != c.wantStream {
				t.Fatalf("streaming %v, want %v (%s)", streaming, c.wantStream, resp.Header.Get("Content-Type"))
			}
			if !streaming && c.method != http.MethodHead {
				b, _ := io.ReadAll(resp.Body)
				if !strings.Contains(string(b), c.wantCode) {
					t.Errorf("body %s, want %s", b, c.wantCode)
				}
			}
		})
	}
}
