package progress

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// fakeOperator answers pushes with a scripted envelope and records what came.
type fakeOperator struct {
	srv     *httptest.Server
	mu      sync.Mutex
	answers []string // envelopes, in order; the last repeats
	headers http.Header
	pushes  []ingest.Push
	tokens  []string
	paths   []string
	n       atomic.Int64
}

func newFakeOperator(t *testing.T, answers ...string) *fakeOperator {
	f := &fakeOperator{answers: answers}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p ingest.Push
		_ = json.NewDecoder(r.Body).Decode(&p)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.pushes = append(f.pushes, p)
		f.tokens = append(f.tokens, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		f.paths = append(f.paths, r.Method+" "+r.URL.Path)
		i := min(int(f.n.Add(1))-1, len(f.answers)-1)
		for k, v := range f.headers {
			w.Header()[k] = v
		}
		_, _ = w.Write([]byte(f.answers[i]))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeOperator) target(t *testing.T, token string) *IngestTarget {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	return &IngestTarget{URL: f.srv.URL + "/anything", CAData: ca, Token: token}
}

// The operator's answers mean what the direct path's do: 429 is throttled with its Retry-After,
// 401 unauthorized, 403 forbidden, 409 the task replaced (permanent), 40001 a bad request, an
// HTTP error from something in between an error; the push goes to the task's own path with the
// task's UID and the writer's name, verified against the CA given.
func TestPushAnswers(t *testing.T) {
	for name, tc := range map[string]struct {
		answer string
		check  func(error) bool
	}{
		"ok": {`{"code":0,"data":{"pending":false},"msg":""}`, func(err error) bool { return err == nil }},
		"throttled": {`{"code":429,"msg":"Too many requests"}`, func(err error) bool {
			s, ok := apierrors.SuggestsClientDelay(err)
			return apierrors.IsTooManyRequests(err) && ok && s == 7
		}},
		"login":       {`{"code":401,"msg":"Login required"}`, apierrors.IsUnauthorized},
		"not writer":  {`{"code":403,"msg":"Not a writer of this task"}`, apierrors.IsForbidden},
		"replaced":    {`{"code":409,"msg":"The task was replaced"}`, func(err error) bool { return errors.Is(err, ErrTaskReplaced) }},
		"bad request": {`{"code":40001,"msg":"Invalid progress"}`, apierrors.IsBadRequest},
		"not json":    {`<html>bad gateway</html>`, func(err error) bool { return err != nil && !apierrors.IsTooManyRequests(err) }},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeOperator(t, tc.answer)
			f.headers = http.Header{"Retry-After": {"7"}}
			s, err := newPushSink(Options{Ingest: f.target(t, "tok"), Namespace: "ns", Task: "t", UID: "u1", FieldManager: "w", RequestTimeout: 5 * time.Second}, &counters{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.put(context.Background(), nil, false)
			if !tc.check(err) {
				t.Errorf("put: %v", err)
			}
			if f.paths[0] != "PUT "+ingest.Path("ns", "t") || f.pushes[0].TaskUID != "u1" || f.pushes[0].Writer != "w" || f.tokens[0] != "tok" {
				t.Errorf("sent %s %+v with token %q", f.paths[0], f.pushes[0], f.tokens[0])
			}
		})
	}
}

// A push the operator has not written yet (pending) is sent again, unchanged, after the time it
// says, without any update in between; once an answer is not pending, nothing more is sent.
func TestPendingPushIsSentAgain(t *testing.T) {
	f := newFakeOperator(t, `{"code":0,"data":{"pending":true,"resendAfterSeconds":1},"msg":""}`,
		`{"code":0,"data":{"pending":false},"msg":""}`)
	r, err := New(Options{Ingest: f.target(t, "tok"), Namespace: "ns", Task: "t", UID: "u1", Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(expired())
	r.Set("upload", 3, 10)
	deadline := time.Now().Add(10 * time.Second)
	for f.n.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // a third push would come within this if the second were pending
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pushes) != 2 {
		t.Fatalf("%d pushes, want the first and one re-send", len(f.pushes))
	}
	if f.pushes[1].Entries[0].Current != 3 || !f.pushes[1].Entries[0].UpdateTime.Equal(f.pushes[0].Entries[0].UpdateTime) {
		t.Errorf("the re-send %+v is not the same state as %+v", f.pushes[1].Entries, f.pushes[0].Entries)
	}
}

// A 401 makes the next push read the token file again (the kubelet rotated it).
func TestPushRereadsTokenAfter401(t *testing.T) {
	f := newFakeOperator(t, `{"code":401,"msg":"Login required"}`, `{"code":0,"data":{},"msg":""}`)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := f.target(t, "")
	target.TokenFile = file
	s, err := newPushSink(Options{Ingest: target, Namespace: "ns", Task: "t", UID: "u1", RequestTimeout: 5 * time.Second}, &counters{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.put(context.Background(), nil, false); !apierrors.IsUnauthorized(err) {
		t.Fatalf("first push: %v", err)
	}
	if err := os.WriteFile(file, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.put(context.Background(), nil, false); err != nil {
		t.Fatal(err)
	}
	if f.tokens[0] != "old" || f.tokens[1] != "new" {
		t.Errorf("tokens sent %v, want old then the rotated new", f.tokens)
	}
}

// The environment the controller injects picks the push path; a URL that is not https, or no
// token file, is an error naming the variable; none leaves the direct path.
func TestIngestTargetFromEnvironment(t *testing.T) {
	for name, tc := range map[string]struct {
		url, file string
		want      bool
		err       string
	}{
		"none":          {},
		"injected":      {url: "https://ingest.svc/ingest/v1alpha1/namespaces/ns/workflowtasks/t/progress", file: "/var/run/token", want: true},
		"plain http":    {url: "http://ingest.svc/x", file: "/t", err: ingest.EnvURL},
		"no token file": {url: "https://ingest.svc/x", err: ingest.EnvTokenFile},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(ingest.EnvURL, tc.url)
			t.Setenv(ingest.EnvTokenFile, tc.file)
			got, err := IngestTargetFromEnvironment()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil || (got != nil) != tc.want {
				t.Errorf("target %+v, err %v; want a target: %t", got, err, tc.want)
			}
		})
	}
}

// Close's final state is sent again, unchanged, while the operator answers that it took it but
// has not written it yet: Close returns once it is written (the process may end then), and
// says so when its deadline comes first.
func TestCloseWaitsUntilFinalWritten(t *testing.T) {
	const pending, written = `{"code":0,"data":{"pending":true,"resendAfterSeconds":10},"msg":""}`, `{"code":0,"data":{"pending":false},"msg":""}`
	f := newFakeOperator(t, pending, pending, written)
	r, err := New(Options{Namespace: "ns", Task: "t", UID: "uid-1", Ingest: f.target(t, "tok")})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 5, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pushes) != 3 {
		t.Fatalf("%d pushes, want 3: the final state until the operator wrote it", len(f.pushes))
	}
	for i, p := range f.pushes {
		if !p.Final || len(p.Entries) != 1 || p.Entries[0].Current != 5 {
			t.Errorf("push %d: %+v, want the final state", i, p)
		}
	}

	never := newFakeOperator(t, pending)
	r, err = New(Options{Namespace: "ns", Task: "t", UID: "uid-1", Ingest: never.target(t, "tok")})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 5, 10)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.Close(ctx); err == nil || !strings.Contains(err.Error(), "NOT written") {
		t.Errorf("Close with the final state never written: %v, want an error saying so", err)
	}
}
