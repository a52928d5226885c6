package apiserver

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// CorrelationIDHeader carries a request's correlation ID, in and out.
const CorrelationIDHeader = "X-Cr-Correlation-Id"

// handler serves GET /workflow/progress/{id} (also under the path prefix) and, for the
// aggregation layer, discovery and /apis/progress.taskops.dev/v1alpha1/{progress/{id} |
// namespaces/{ns}/tasks/{name}}.
type handler struct {
	prefix string
	authn  requestAuthenticator
	authz  authorizer.Authorizer
	tasks  *taskIndex
	debug  bool
	log    logr.Logger
	// changes announces task changes to streams; streams bounds them.
	changes *changeHub
	streams *streamLimiter
	// heartbeat, lifetime and reauth are a stream's comment interval, maximum life, and how
	// often it authenticates and authorizes its caller again.
	heartbeat, lifetime, reauth time.Duration
	// shutdown is closed when the server shuts down: streams end (they never turn idle).
	shutdown     chan struct{}
	shutdownOnce sync.Once
	// ingest takes pods' pushes (nil: --progress-ingest is off).
	ingest http.Handler
}

// requestAuthenticator identifies a request's caller: the front door's Authenticator (which,
// on success, keeps the connection alive).
type requestAuthenticator interface {
	Authenticate(w http.ResponseWriter, r *http.Request) (user.Info, error)
	// Refused charges an answer given without authentication to the client's budget; over
	// it, after a tarpit, it reports true.
	Refused(r *http.Request) bool
}

// target is what a request names: a task ID, or (byName) a namespace and name; key is where
// changes of it are announced (changeHub), built only when a stream needs it.
type target struct {
	id              string
	byName          bool
	namespace, name string
}

func (t target) key() string {
	if t.byName {
		return nameKey(t.namespace, t.name)
	}
	return idKey(t.id)
}

// valid: a well-formed ID, or a namespace and task name as Kubernetes allows them.
func (t target) valid() bool {
	if t.byName {
		return len(validation.IsDNS1123Label(t.namespace)) == 0 && len(validation.IsDNS1123Subdomain(t.name)) == 0
	}
	return workflowv1alpha1.IsValidTaskID(t.id)
}

// Header values the handler sets, shared (net/http never changes them).
var (
	allowGetHead = []string{"GET, HEAD"}
	retryAfter1  = []string{"1"}
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.ingest != nil && strings.HasPrefix(r.URL.Path, ingest.PathPrefix) {
		h.ingest.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	cid := correlationID(r)
	w.Header()[CorrelationIDHeader] = []string{cid}
	if r.URL.Path == discoveryPath {
		// Public, but paced like any unauthenticated answer (the aggregator's own requests
		// authenticate with the front proxy's certificate).
		_, _ = h.authn.Authenticate(w, r)
		serveDiscovery(w, r)
		return
	}
	t, ok := h.route(r.URL.Path)
	code := CodeNotFound
	var u user.Info
	switch {
	case !ok:
		h.authn.Refused(r)
		writeError(w, CodeNotFound, MsgNotFound, cid, nil, h.debug)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		h.authn.Refused(r)
		w.Header()["Allow"] = allowGetHead
		code = CodeMethod
		writeError(w, CodeMethod, MsgMethod, cid, nil, h.debug)
	default:
		code, u = h.serveProgress(w, r, cid, t)
	}
	if log := h.log.V(1); log.Enabled() { // values built only when they are logged
		log = log.WithValues("correlationID", cid, "method", r.Method, "path", truncate(r.URL.Path, 200))
		if u != nil {
			log = log.WithValues("user", u.GetName())
		}
		log.Info("Progress request", "code", code, "duration", time.Since(start))
	}
}

// serveProgress authenticates, finds the task, authorizes, and answers. On the by-name path the
// caller is authorized before the lookup, so that an existing task not theirs and no task at all
// cost the same work: whether a name exists does not show, not even in the time taken.
func (h *handler) serveProgress(w http.ResponseWriter, r *http.Request, cid string, t target) (int, user.Info) {
	var credentials *http.Request // a stream authenticates again; authenticating consumes the token header
	if wantsStream(r) {           // (credentials != nil: a stream)
		credentials = r.Clone(r.Context())
	}
	u, err := h.authn.Authenticate(w, r)
	switch {
	case errors.Is(err, frontdoor.ErrLoginBudget), errors.Is(err, frontdoor.ErrIdentityBudget), errors.Is(err, frontdoor.ErrBusy):
		w.Header()["Retry-After"] = retryAfter1
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
		return CodeTooMany, nil
	case err != nil:
		writeError(w, CodeLoginRequired, MsgLoginRequired, cid, nil, h.debug)
		return CodeLoginRequired, nil
	}
	if credentials != nil {
		return h.stream(w, r, credentials, cid, u, t), u
	}
	body, _, code, err := h.progressFor(r.Context(), u, t)
	if code != CodeSuccess {
		return h.answerError(w, cid, code, err), u
	}
	writeBody(w, body)
	return CodeSuccess, u
}

// progressFor is the body u sees for the request's task: its progress when u may see it, the
// empty body otherwise (and when there is no such task); or a result code other than success
// (429 when a review slot was not free, 40001 for a malformed ID, 50000 with the error).
// visible says u may see what the request names: a task of theirs or one they administer, or,
// on the by-name path, the name whether or not a task has it yet (an admin's).
func (h *handler) progressFor(ctx context.Context, u user.Info, t target) (body []byte, visible bool, code int, err error) {
	if !t.valid() {
		return nil, false, CodeParamErr, nil
	}
	if t.byName {
		admin, err := h.isAdmin(ctx, u, t.namespace, t.name)
		switch {
		case errors.Is(err, frontdoor.ErrBusy):
			return nil, false, CodeTooMany, nil
		case err != nil && !admin:
			return nil, false, CodeInternal, err
		}
		if it := h.tasks.ByName(t.namespace, t.name); it != nil && (admin || it.task.Spec.Owner == u.GetName()) {
			return it.body, true, CodeSuccess, nil
		}
		return emptyBody, admin, CodeSuccess, nil
	}
	for _, it := range h.tasks.ByID(t.id) {
		ok, err := h.canSee(ctx, u, it.task)
		switch {
		case errors.Is(err, frontdoor.ErrBusy):
			return nil, false, CodeTooMany, nil
		case err != nil:
			return nil, false, CodeInternal, err
		case ok:
			return it.body, true, CodeSuccess, nil
		}
	}
	return emptyBody, false, CodeSuccess, nil
}

// answerError writes the envelope of a result code progressFor returned.
func (h *handler) answerError(w http.ResponseWriter, cid string, code int, err error) int {
	switch code {
	case CodeTooMany:
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
	case CodeParamErr:
		writeError(w, CodeParamErr, MsgParseID, cid, nil, h.debug)
	default:
		code, _ = h.internal(w, cid, err, nil)
	}
	return code
}

func (h *handler) internal(w http.ResponseWriter, cid string, err error, u user.Info) (int, user.Info) {
	h.log.Error(err, "Progress request failed", "correlationID", cid)
	writeError(w, CodeInternal, MsgInternal, cid, err, h.debug)
	return CodeInternal, u
}

// route maps a path to what it names: /workflow/progress/{id} (also under the prefix and the
// aggregated API's progress/{id}), or the aggregated namespaces/{ns}/tasks/{name}.
func (h *handler) route(path string) (target, bool) {
	for _, p := range [...]string{"/workflow/progress/", h.prefix + "/workflow/progress/", aggregatedPath + "/progress/"} {
		if id, ok := strings.CutPrefix(path, p); ok {
			return target{id: id}, !strings.Contains(id, "/")
		}
	}
	if rest, ok := strings.CutPrefix(path, aggregatedPath+"/namespaces/"); ok {
		ns, rest, ok1 := strings.Cut(rest, "/")
		resource, name, ok2 := strings.Cut(rest, "/")
		if !ok1 || !ok2 || resource != "tasks" || strings.Contains(name, "/") {
			return target{}, false
		}
		return target{byName: true, namespace: ns, name: name}, true
	}
	return target{}, false
}

// correlationID is the request's X-Cr-Correlation-Id when it is a UUID, else a new UUIDv4
// (anything else could break the envelope's uuid format or forge log lines).
func correlationID(r *http.Request) string {
	if v := r.Header.Get(CorrelationIDHeader); v != "" {
		if id, err := uuid.Parse(v); err == nil {
			return id.String()
		}
	}
	return uuid.NewString()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
