package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// MaxTokenBytes bounds a bearer token; a longer one is refused without a TokenReview.
const MaxTokenBytes = 16 << 10

var (
	errNotAuthenticated = errors.New("not authenticated")
	errBusy             = errors.New("too many concurrent reviews")
)

// reviewLimiter bounds the TokenReviews and SubjectAccessReviews in flight, so a flood of
// distinct tokens or task names cannot flood the API server.
type reviewLimiter chan struct{}

func (l reviewLimiter) do(ctx context.Context, f func() error) error {
	select {
	case l <- struct{}{}:
	case <-ctx.Done():
		return errBusy
	}
	defer func() { <-l }()
	return f()
}

// authenticate identifies the caller with k8s.io/apiserver's delegating authenticator: a
// front-proxy client certificate with X-Remote-* headers (the aggregation layer), a client
// certificate, or a bearer token checked by TokenReview (service-account and OIDC tokens the
// cluster trusts). A bearer token that is not JWT-shaped or is oversized is refused before any
// TokenReview.
func (h *handler) authenticate(r *http.Request) (user.Info, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") || !looksLikeJWT(strings.TrimSpace(token)) {
			return nil, errNotAuthenticated
		}
	}
	var (
		resp *authenticator.Response
		ok   bool
	)
	err := h.reviews.do(r.Context(), func() error {
		var err error
		resp, ok, err = h.authn.AuthenticateRequest(r)
		return err
	})
	switch {
	case errors.Is(err, errBusy):
		return nil, err
	case err != nil || !ok || resp == nil || resp.User == nil || resp.User.GetName() == "":
		return nil, errNotAuthenticated
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
	attrs := authorizer.AttributesRecord{
		User: u, Verb: "get", ResourceRequest: true,
		APIGroup: workflowv1alpha1.GroupVersion.Group, APIVersion: workflowv1alpha1.GroupVersion.Version,
		Resource: "workflowtasks", Subresource: "progress", Namespace: task.Namespace, Name: task.Name,
	}
	var decision authorizer.Decision
	err := h.reviews.do(ctx, func() error {
		var err error
		decision, _, err = h.authz.Authorize(ctx, attrs)
		return err
	})
	if decision == authorizer.DecisionAllow {
		return true, nil
	}
	return false, err
}
