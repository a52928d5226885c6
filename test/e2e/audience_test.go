package e2e_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/taskops/workflowtask-operator/apiserver"
)

// envelope is the endpoint's answer, as a client reads it.
type envelope struct {
	Code int             `json:"code"`
	Msg  string          `json:"msg"`
	Data json.RawMessage `json:"data"`
}

// The installed operator takes bearer tokens for its own audience only: the owner's token for
// progress.taskops.dev reads the task's progress, the same owner's token for kube-apiserver's
// default audience gets 401 "Login required". Each works only where it is meant to:
// kube-apiserver refuses the endpoint's token, so one replayed from the endpoint's side is
// useless against the cluster.
func TestEndpointTokenAudience(t *testing.T) {
	g := gomega.NewWithT(t)
	ctx := context.Background()
	applyTask(t, "audience", "", "")
	t.Cleanup(func() { // gone with its Job before the next test counts the namespace's tasks and Jobs
		_, _ = cluster.Kubectl(ctx, "delete", "workflowtask", "audience", "--ignore-not-found", "--cascade=foreground", "--wait=true", "--timeout=60s")
	})
	pod := runningPod(t, "default", "audience")
	report(t, pod, "audience", "set", "relocate", "1/4")
	var id string
	g.Eventually(func() string { id = jsonpath(t, "default", "wft", "audience", "{.status.id}"); return id }).ShouldNot(gomega.BeEmpty())

	forEndpoint, forAPIServer := endpointToken(t, "default", "alice"), saToken(t, "default", "alice")
	answer := func(token string) func(gomega.Gomega) envelope {
		return func(g gomega.Gomega) envelope {
			var e envelope
			out := curl(t, token, "/workflow/progress/"+id)
			g.Expect(json.Unmarshal([]byte(out), &e)).To(gomega.Succeed(), out)
			return e
		}
	}
	// Refused before the task is looked up: once is enough (and spends one of the address's
	// budget of refused logins, not twenty).
	refused := answer(forAPIServer)(g)
	g.Expect(refused.Code).To(gomega.Equal(apiserver.CodeLoginRequired), "the owner's token for kube-apiserver: code %d, data %s", refused.Code, refused.Data)
	g.Expect(refused.Msg).To(gomega.Equal(apiserver.MsgLoginRequired))
	g.Expect(string(refused.Data)).To(gomega.BeEmpty(), "no progress with the refusal")
	g.Eventually(answer(forEndpoint)).Should(gomega.And(
		gomega.HaveField("Code", apiserver.CodeSuccess),
		gomega.HaveField("Data", gomega.WithTransform(func(d json.RawMessage) string { return string(d) },
			gomega.ContainSubstring(`"relocate":{"total":4,"current":1`)))),
		"the owner's token for %s", apiserver.TokenAudience)

	// kube-apiserver, for its part, takes its own token and refuses the endpoint's.
	whoAmI := func(token string) (string, error) {
		r, err := kubernetes.NewForConfigOrDie(cluster.TokenConfig(token)).AuthenticationV1().SelfSubjectReviews().
			Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return r.Status.UserInfo.Username, nil
	}
	if user, err := whoAmI(forAPIServer); err != nil || user != "system:serviceaccount:default:alice" {
		t.Errorf("kube-apiserver with its own token: %q, %v", user, err)
	}
	if user, err := whoAmI(forEndpoint); !apierrors.IsUnauthorized(err) {
		t.Errorf("kube-apiserver took the endpoint's token: %q, %v; want 401 Unauthorized", user, err)
	}
}
