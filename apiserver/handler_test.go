package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// A JWT-shaped token the stub authenticator below knows.
var aliceToken = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + ".e30.c2ln"

// taskUID is the test task's UID, and taskID its ID.
const taskUID = "6a8f2b1c-3d4e-4f50-8a61-7b2c9d0e1f23"

var taskID = workflowv1alpha1.TaskIDFromUID(taskUID)

// indexOf is an index holding tasks, as the informer's events would fill it.
func indexOf(tasks ...*workflowv1alpha1.WorkflowTask) *taskIndex {
	x := newTaskIndex(nil)
	for _, t := range tasks {
		x.set(t)
	}
	return x
}

func testHandler() *handler {
	task := testutil.MakeTask("t", "ns").Owner("alice").Progress("upload", 1, 2, testutilTime).Obj()
	task.UID = taskUID
	return &handler{
		prefix: "/api/v4",
		authn: authenticateFunc(func(_ http.ResponseWriter, r *http.Request) (user.Info, error) {
			if r.Header.Get("Authorization") == "Bearer "+aliceToken {
				return &user.DefaultInfo{Name: "alice"}, nil
			}
			return nil, frontdoor.ErrNotAuthenticated
		}),
		authz: authorizer.AuthorizerFunc(func(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
			return authorizer.DecisionNoOpinion, "", nil
		}),
		tasks: indexOf(task),
		log:   logr.Discard(),
	}
}

// authenticateFunc is a stub of the front door's authenticator, for the handler's own tests.
type authenticateFunc func(http.ResponseWriter, *http.Request) (user.Info, error)

func (f authenticateFunc) Authenticate(w http.ResponseWriter, r *http.Request) (user.Info, error) {
	return f(w, r)
}

func (authenticateFunc) Refused(*http.Request) bool { return false }

func serve(h http.Handler, method, target string, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "https://progress.example", nil)
	req.URL.Path = target // any bytes, as a raw client could send
	req.URL.RawPath = ""
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func codeOf(t testing.TB, rec *httptest.ResponseRecorder) int {
	t.Helper()
	var b struct {
		Code *int `json:"code"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Code == nil {
		t.Fatalf("body %q is not an envelope: %v", rec.Body.String(), err)
	}
	return *b.Code
}

// Every bad id, path and method gets a defined answer: HTTP 200 and an envelope code.
func TestBadIDsAndPaths(t *testing.T) {
	h := testHandler()
	cases := map[string]struct {
		method, path string
		want         int
	}{
		"good":                {"GET", "/workflow/progress/" + taskID, CodeSuccess},
		"good with prefix":    {"GET", "/api/v4/workflow/progress/" + taskID, CodeSuccess},
		"good aggregated":     {"GET", "/apis/progress.taskops.dev/v1alpha1/progress/" + taskID, CodeSuccess},
		"good by name":        {"GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/t", CodeSuccess},
		"unknown id":          {"GET", "/workflow/progress/AAAAAAAAAA", CodeSuccess},
		"empty id":            {"GET", "/workflow/progress/", CodeParamErr},
		"one char":            {"GET", "/workflow/progress/a", CodeParamErr},
		"1 MB":                {"GET", "/workflow/progress/" + strings.Repeat("a", 1<<20), CodeParamErr},
		"dot-dot":             {"GET", "/workflow/progress/..", CodeParamErr},
		"NUL":                 {"GET", "/workflow/progress/\x00", CodeParamErr},
		"NUL in an id":        {"GET", "/workflow/progress/mA7mF4x9Z\x00", CodeParamErr},
		"unicode":             {"GET", "/workflow/progress/mA7mF4x9Zé", CodeParamErr},
		"wrong alphabet":      {"GET", "/workflow/progress/mA7mF4-9Zq", CodeParamErr},
		"too long":            {"GET", "/workflow/progress/" + taskID + "x", CodeParamErr},
		"trailing slash":      {"GET", "/workflow/progress/" + taskID + "/", CodeNotFound},
		"extra segment":       {"GET", "/workflow/progress/" + taskID + "/more", CodeNotFound},
		"no id segment":       {"GET", "/workflow/progress", CodeNotFound},
		"root":                {"GET", "/", CodeNotFound},
		"other path":          {"GET", "/workflow/tasks", CodeNotFound},
		"bad namespace":       {"GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/NS!/tasks/t", CodeParamErr},
		"bad task name":       {"GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/..", CodeParamErr},
		"by name, extra":      {"GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/t/x", CodeNotFound},
		"by name, wrong kind": {"GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/jobs/t", CodeNotFound},
		"POST":                {"POST", "/workflow/progress/" + taskID, CodeMethod},
		"DELETE":              {"DELETE", "/workflow/progress/" + taskID, CodeMethod},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rec := serve(h, tc.method, tc.path, aliceToken)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d", rec.Code)
			}
			if got := codeOf(t, rec); got != tc.want {
				t.Errorf("code %d, want %d (body %s)", got, tc.want, rec.Body)
			}
		})
	}
}

// HEAD answers like GET, without a body (net/http drops it).
func TestHead(t *testing.T) {
	rec := serve(testHandler(), http.MethodHead, "/workflow/progress/"+taskID, aliceToken)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") == "" {
		t.Errorf("HEAD: %d %v", rec.Code, rec.Header())
	}
}

// Login is checked before the id: Cloudreve's order.
func TestLoginBeforeID(t *testing.T) {
	h := testHandler()
	for _, path := range []string{"/workflow/progress/..", "/workflow/progress/" + taskID} {
		if got := codeOf(t, serve(h, "GET", path, "")); got != CodeLoginRequired {
			t.Errorf("%s without a token: code %d", path, got)
		}
	}
}

func FuzzHandler(f *testing.F) {
	for _, s := range []string{"/workflow/progress/" + taskID, "/api/v4/workflow/progress/..", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/t", "/%00", ""} {
		f.Add("GET", s, aliceToken)
	}
	f.Add("POST", "/workflow/progress/x", "garbage")
	h := testHandler()
	f.Fuzz(func(t *testing.T, method, path, token string) {
		if !validMethod(method) {
			return
		}
		rec := serve(h, method, "/"+path, token)
		if rec.Code >= 500 {
			t.Fatalf("HTTP %d for %q %q", rec.Code, method, path)
		}
	})
}

// validMethod: httptest.NewRequest panics on methods net/http would never deliver.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// An internal failure (here: a SubjectAccessReview that cannot be sent) answers 50000 with a
// plain message and a correlation ID; the raw error only with --progress-debug.
func TestInternalErrorAndDebug(t *testing.T) {
	for _, debug := range []bool{false, true} {
		h := testHandler()
		h.debug = debug
		h.authz = authorizer.AuthorizerFunc(func(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
			return authorizer.DecisionNoOpinion, "", errors.New("subjectaccessreviews: connection refused to 10.0.0.1:6443")
		})
		rec := serve(h, "GET", "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/t", aliceToken)
		var b struct {
			Code          int    `json:"code"`
			Msg           string `json:"msg"`
			Error         string `json:"error"`
			CorrelationID string `json:"correlation_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d body %s", rec.Code, rec.Body)
		}
		if b.Code != CodeInternal || b.Msg != MsgInternal || b.CorrelationID == "" {
			t.Errorf("debug=%t: %+v", debug, b)
		}
		if hasRaw := strings.Contains(b.Error, "connection refused"); hasRaw != debug {
			t.Errorf("debug=%t: error field %q", debug, b.Error)
		}
	}
}

// Whether a task exists must not show, not even in the work done: on the by-name path a
// stranger's request for an existing task and for no task at all make the same authorization
// checks and get the same bytes; the owner sees the progress; an admin sees it by its allow.
func TestByNameHidesExistence(t *testing.T) {
	h := testHandler()
	var checks []string
	h.authz = authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		checks = append(checks, a.GetUser().GetName()+" "+a.GetNamespace()+"/"+a.GetName())
		if a.GetUser().GetName() == "admin" {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionNoOpinion, "", nil
	})
	// A JWT-shaped token whose payload is the user's name.
	token := func(name string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(name)) + ".x"
	}
	h.authn = authenticateFunc(func(_ http.ResponseWriter, r *http.Request) (user.Info, error) {
		parts := strings.Split(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), ".")
		name, _ := base64.RawURLEncoding.DecodeString(parts[1])
		return &user.DefaultInfo{Name: string(name)}, nil
	})
	const byName = "/apis/progress.taskops.dev/v1alpha1/namespaces/ns/tasks/"
	cases := []struct {
		name, user, path string
		wantChecks       []string
		wantCode         int
		wantEmpty        bool
	}{
		{"stranger, existing task", "mallory", byName + "t", []string{"mallory ns/t"}, CodeSuccess, true},
		{"stranger, no such task", "mallory", byName + "nope", []string{"mallory ns/nope"}, CodeSuccess, true},
		{"owner", "alice", byName + "t", []string{"alice ns/t"}, CodeSuccess, false},
		{"admin", "admin", byName + "t", []string{"admin ns/t"}, CodeSuccess, false},
	}
	bodies := map[string]string{}
	for _, tc := range cases {
		checks = nil
		rec := serve(h, http.MethodGet, tc.path, token(tc.user))
		if got := codeOf(t, rec); got != tc.wantCode {
			t.Errorf("%s: code %d", tc.name, got)
		}
		if diff := cmp.Diff(tc.wantChecks, checks); diff != "" {
			t.Errorf("%s: authorization checks (-want +got):\n%s", tc.name, diff)
		}
		if empty := rec.Body.String() == string(emptyBody); empty != tc.wantEmpty {
			t.Errorf("%s: body %s", tc.name, rec.Body.String())
		}
		bodies[tc.name] = rec.Body.String()
		if tc.name == "owner" || tc.name == "admin" {
			if !strings.Contains(rec.Body.String(), `"upload"`) {
				t.Errorf("%s: no progress in %s", tc.name, rec.Body.String())
			}
		}
	}
	if bodies["stranger, existing task"] != bodies["stranger, no such task"] {
		t.Errorf("a stranger tells an existing task from none: %q vs %q", bodies["stranger, existing task"], bodies["stranger, no such task"])
	}
}

// Every request has a deadline.
func TestRequestsHaveADeadline(t *testing.T) {
	var deadline time.Time
	var ok bool
	h := withTimeout(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { deadline, ok = r.Context().Deadline() }), time.Minute)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if !ok || time.Until(deadline) > time.Minute {
		t.Errorf("deadline %v (set: %t)", deadline, ok)
	}
}

func TestWantsStream(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/event-stream":                          true,
		"TEXT/Event-Stream; charset=utf-8":           true,
		"application/json;q=0.5, text/event-stream":  true,
		"text/event-stream-not":                      false,
		"application/json":                           false,
		"":                                           false,
		"text/event-streamtext/event-stream":         false,
		strings.Repeat("text/plain, ", 1000) + "x/y": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/workflow/progress/AAAAAAAAAA", nil)
		r.Header.Set("Accept", accept)
		if got := wantsStream(r); got != want {
			t.Errorf("Accept %.40q: %v, want %v", accept, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodHead, "/", nil)
	r.Header.Set("Accept", "text/event-stream")
	if wantsStream(r) {
		t.Error("HEAD streams")
	}
}
