package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// MaxTokenBytes bounds a bearer token; a longer one is refused without a TokenReview.
const MaxTokenBytes = 16 << 10

var errNotAuthenticated = errors.New("not authenticated")

// webSocketBearerPrefix starts a bearer token sent as a WebSocket subprotocol, which
// k8s.io/apiserver's authenticator would accept. This endpoint serves no WebSockets and takes
// tokens from the Authorization header only, where they are checked before any review.
const webSocketBearerPrefix = "base64url.bearer.authorization.k8s.io."

// authenticate identifies the caller with k8s.io/apiserver's delegating authenticator: a
// front-proxy client certificate with X-Remote-* headers (the aggregation layer), a client
// certificate, or a bearer token in the Authorization header checked by TokenReview
// (service-account and OIDC tokens the cluster trusts). Before any TokenReview, a token is
// refused when it arrives anywhere else (a WebSocket subprotocol), is not JWT-shaped or is
// oversized; a client over its failed-login budget may send no new review (errLoginBudget).
func (h *handler) authenticate(r *http.Request) (user.Info, error) {
	for _, p := range r.Header.Values("Sec-WebSocket-Protocol") {
		if strings.Contains(p, webSocketBearerPrefix) {
			return nil, errNotAuthenticated
		}
	}
	r.Header.Del("Sec-WebSocket-Protocol")
	token := ""
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, t, _ := strings.Cut(auth, " ")
		if token = strings.TrimSpace(t); !strings.EqualFold(scheme, "Bearer") || !looksLikeJWT(token) {
			return nil, errNotAuthenticated
		}
	}
	bearer, now := token != "", time.Now()
	known := bearer && h.known.has(token, now)
	client := "" // set when a failed login was taken from the client's budget for a new token
	if bearer && !known {
		client = clientKey(r)
		if !h.logins.reserve(client, now) {
			return nil, errLoginBudget
		}
	}
	refund := func() {
		if client != "" {
			h.logins.refund(client, time.Now())
		}
	}
	if len(h.audiences) > 0 { // as kube-apiserver's authentication filter does
		r = r.WithContext(authenticator.WithAudiences(r.Context(), h.audiences))
	}
	resp, ok, err := h.authn.AuthenticateRequest(r)
	switch {
	case errors.Is(err, errBusy):
		refund() // not reviewed: nothing failed
		return nil, err
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() != nil: // the request's own deadline
		refund()
		return nil, errBusy
	case err != nil || !ok || resp == nil || resp.User == nil || resp.User.GetName() == "" ||
		len(h.audiences) > 0 && len(resp.Audiences) > 0 && len(h.audiences.Intersect(resp.Audiences)) == 0:
		return nil, errNotAuthenticated // the failed login stays spent
	}
	if bearer && !known {
		refund() // not a failed login after all
		h.known.add(token, now)
	}
	return resp.User, nil
}

// looksLikeJWT: three base64url segments, the first a JSON object naming an algorithm, the
// whole at most MaxTokenBytes.
func looksLikeJWT(token string) bool {
	if len(token) == 0 || len(token) > MaxTokenBytes {
		return false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return false
	}
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(raw, &header) == nil && header.Alg != ""
}

// canSee: the task's owner sees it; anyone else only if a SubjectAccessReview allows "get" on
// workflowtasks/progress for that task (an admin). Only an explicit allow allows.
func (h *handler) canSee(ctx context.Context, u user.Info, task *workflowv1alpha1.WorkflowTask) (bool, error) {
	if task.Spec.Owner == u.GetName() {
		return true, nil
	}
	return h.isAdmin(ctx, u, task.Namespace, task.Name)
}

// isAdmin asks whether u may "get" workflowtasks/progress of the task namespace/name, whether
// or not there is such a task.
func (h *handler) isAdmin(ctx context.Context, u user.Info, namespace, name string) (bool, error) {
	attrs := authorizer.AttributesRecord{
		User: u, Verb: "get", ResourceRequest: true,
		APIGroup: workflowv1alpha1.GroupVersion.Group, APIVersion: workflowv1alpha1.GroupVersion.Version,
		Resource: "workflowtasks", Subresource: "progress", Namespace: namespace, Name: name,
	}
	decision, _, err := h.authz.Authorize(ctx, attrs)
	if decision == authorizer.DecisionAllow {
		return true, nil
	}
	return false, err
}
