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
)

// CorrelationIDHeader carries a request's correlation ID, in and out.
const CorrelationIDHeader = "X-Cr-Correlation-Id"

// taskReader finds tasks; the server's reads the manager's informer cache.
type taskReader interface {
	// ByID returns the tasks whose ID is id (normally one; two only on an ID collision).
	ByID(ctx context.Context, id string) ([]*workflowv1alpha1.WorkflowTask, error)
	// ByName returns the task, or nil when there is none.
	ByName(ctx context.Context, namespace, name string) (*workflowv1alpha1.WorkflowTask, error)
}

// handler serves GET /workflow/progress/{id} (also under the path prefix) and, for the
// aggregation layer, discovery and /apis/progress.taskops.dev/v1alpha1/{progress/{id} |
// namespaces/{ns}/tasks/{name}}.
type handler struct {
	prefix string
	authn  requestAuthenticator
	authz  authorizer.Authorizer
	tasks  taskReader
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
}

// requestAuthenticator identifies a request's caller: the front door's Authenticator (which,
// on success, keeps the connection alive).
type requestAuthenticator interface {
	Authenticate(w http.ResponseWriter, r *http.Request) (user.Info, error)
	// Refused charges an answer given without authentication to the client's budget; over
	// it, after a tarpit, it reports true.
	Refused(r *http.Request) bool
}

// lookup finds the tasks a request names, or reports why it names none.
type lookup func(ctx context.Context) ([]*workflowv1alpha1.WorkflowTask, error)

// byName is the namespace and name a by-name request names, checked before any lookup.
type byName struct{ namespace, name string }

var errBadID = errors.New("malformed task id")

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cid := correlationID(r)
	w.Header().Set(CorrelationIDHeader, cid)
	log := h.log.WithValues("correlationID", cid, "method", r.Method, "path", truncate(r.URL.Path, 200))

	if r.URL.Path == discoveryPath {
		// Public, but paced like any unauthenticated answer (the aggregator's own requests
		// authenticate with the front proxy's certificate).
		_, _ = h.authn.Authenticate(w, r)
		serveDiscovery(w, r)
		return
	}
	find, named, key, ok := h.route(r.URL.Path)
	if !ok {
		h.authn.Refused(r)
		writeError(w, CodeNotFound, MsgNotFound, cid, nil, h.debug)
		log.V(1).Info("Progress request", "code", CodeNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.authn.Refused(r)
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, CodeMethod, MsgMethod, cid, nil, h.debug)
		log.V(1).Info("Progress request", "code", CodeMethod)
		return
	}
	code, u := h.serveProgress(w, r, cid, find, named, key)
	if u != nil {
		log = log.WithValues("user", u.GetName())
	}
	log.V(1).Info("Progress request", "code", code, "duration", time.Since(start))
}

// serveProgress authenticates, finds the task, authorizes, and answers. On the by-name path the
// caller is authorized before the lookup, so that an existing task not theirs and no task at all
// cost the same work: whether a name exists does not show, not even in the time taken.
func (h *handler) serveProgress(w http.ResponseWriter, r *http.Request, cid string, find lookup, named *byName, key string) (int, user.Info) {
	var credentials *http.Request // a stream authenticates again; authenticating consumes the token header
	if wantsStream(r) {
		credentials = r.Clone(r.Context())
	}
	u, err := h.authn.Authenticate(w, r)
	switch {
	case errors.Is(err, frontdoor.ErrLoginBudget), errors.Is(err, frontdoor.ErrIdentityBudget), errors.Is(err, frontdoor.ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
		return CodeTooMany, nil
	case err != nil:
		writeError(w, CodeLoginRequired, MsgLoginRequired, cid, nil, h.debug)
		return CodeLoginRequired, nil
	}
	if wantsStream(r) {
		return h.stream(w, r, credentials, cid, u, find, named, key), u
	}
	body, _, code, err := h.progressFor(r.Context(), u, find, named)
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
func (h *handler) progressFor(ctx context.Context, u user.Info, find lookup, named *byName) (body []byte, visible bool, code int, err error) {
	canSee := h.canSee
	admin := false
	if named != nil && validName(named) {
		admin, err = h.isAdmin(ctx, u, named.namespace, named.name)
		switch {
		case errors.Is(err, frontdoor.ErrBusy):
			return nil, false, CodeTooMany, nil
		case err != nil && !admin:
			return nil, false, CodeInternal, err
		}
		canSee = func(_ context.Context, u user.Info, t *workflowv1alpha1.WorkflowTask) (bool, error) {
			return admin || t.Spec.Owner == u.GetName(), nil
		}
	}
	tasks, err := find(ctx)
	switch {
	case errors.Is(err, errBadID):
		return nil, false, CodeParamErr, nil
	case err != nil:
		return nil, false, CodeInternal, err
	}
	for _, t := range tasks {
		ok, err := canSee(ctx, u, t)
		switch {
		case errors.Is(err, frontdoor.ErrBusy):
			return nil, false, CodeTooMany, nil
		case err != nil:
			return nil, false, CodeInternal, err
		case ok:
			return progressBody(t.Status.Progress), true, CodeSuccess, nil
		}
	}
	return emptyBody, admin, CodeSuccess, nil
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

// route maps a path to the lookup it asks for (and, on the by-name path, the name it names),
// and the key under which changes of its task are announced (changeHub).
func (h *handler) route(path string) (lookup, *byName, string, bool) {
	for _, p := range []string{"/workflow/progress/", h.prefix + "/workflow/progress/", aggregatedPath + "/progress/"} {
		if id, ok := strings.CutPrefix(path, p); ok {
			if strings.Contains(id, "/") {
				return nil, nil, "", false
			}
			return func(ctx context.Context) ([]*workflowv1alpha1.WorkflowTask, error) {
				if !workflowv1alpha1.IsValidTaskID(id) {
					return nil, errBadID
				}
				return h.tasks.ByID(ctx, id)
			}, nil, idKey(id), true
		}
	}
	if rest, ok := strings.CutPrefix(path, aggregatedPath+"/namespaces/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) != 3 || parts[1] != "tasks" {
			return nil, nil, "", false
		}
		ns, name := parts[0], parts[2]
		return func(ctx context.Context) ([]*workflowv1alpha1.WorkflowTask, error) {
			if !validName(&byName{ns, name}) {
				return nil, errBadID
			}
			t, err := h.tasks.ByName(ctx, ns, name)
			if t == nil || err != nil {
				return nil, err
			}
			return []*workflowv1alpha1.WorkflowTask{t}, nil
		}, &byName{ns, name}, nameKey(ns, name), true
	}
	return nil, nil, "", false
}

// validName: a namespace and a task name as Kubernetes allows them.
func validName(n *byName) bool {
	return len(validation.IsDNS1123Label(n.namespace)) == 0 && len(validation.IsDNS1123Subdomain(n.name)) == 0
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
