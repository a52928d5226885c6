package endpoint_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// progressAudience is the dedicated audience the README recommends.
const progressAudience = "progress.taskops.dev"

// With --progress-token-audiences set to a dedicated audience, a token for that audience is
// accepted and a token for the API server (the kind a client could replay against
// kube-apiserver) is refused; OIDC tokens, which kube-apiserver takes as for its own audiences,
// are refused too. Without the flag (the suite's main endpoint) both SA tokens pass.
func TestTokenAudiences(t *testing.T) {
	ctx := context.Background()
	audienceURL := startEndpoint(t, func(o *apiserver.Options) { o.TokenAudiences = []string{progressAudience} })

	owner := newSAUser(t, "users", "aud")
	task := createTaskWithProgress(t, testutil.MakeTask("audience", "team-d").Owner(owner.name), entry("upload", 2, 4, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	dedicated, err := testenv.Token(ctx, adminCfg, "users", "aud", progressAudience)
	if err != nil {
		t.Fatal(err)
	}
	codeAt := func(base, token string) int {
		t.Helper()
		return callRequest(t, clientFor(t), bearerRequest(base+path, token))
	}
	g := gomega.NewWithT(t)
	g.Eventually(func() int { return codeAt(audienceURL, dedicated) }, "10s").Should(gomega.Equal(apiserver.CodeSuccess), "a token for the dedicated audience")
	oidcOwned := createTaskWithProgress(t, testutil.MakeTask("audience-oidc", "team-d").Owner("oidc:dana"), entry("upload", 1, 4, ""))
	oidcPath := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(oidcOwned.UID)
	g.Eventually(func() int {
		return callRequest(t, clientFor(t), bearerRequest(endpointURL+oidcPath, oidc.token("dana", oidc.key)))
	}).
		Should(gomega.Equal(apiserver.CodeSuccess), "the OIDC token works where no audience is configured (the issuer's keys are loaded)")
	if code := callRequest(t, clientFor(t), bearerRequest(audienceURL+oidcPath, oidc.token("dana", oidc.key))); code != apiserver.CodeLoginRequired {
		t.Errorf("an OIDC token where only %s is accepted: code %d, want 401", progressAudience, code)
	}
	cases := map[string]struct {
		base, token string
		want        int
	}{
		"API server token, audience configured":      {audienceURL, owner.token, apiserver.CodeLoginRequired},
		"dedicated token, no audience configured":    {endpointURL, dedicated, apiserver.CodeLoginRequired},
		"API server token, no audience configured":   {endpointURL, owner.token, apiserver.CodeSuccess},
		"dedicated token again, audience configured": {audienceURL, dedicated, apiserver.CodeSuccess},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := codeAt(tc.base, tc.token); got != tc.want {
				t.Errorf("code %d, want %d", got, tc.want)
			}
		})
	}
}

func bearerRequest(url, token string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// startEndpoint runs another endpoint with the suite's manager cache and options changed by
// configure, until the test ends, and returns its URL.
func startEndpoint(t testing.TB, configure func(*apiserver.Options)) string {
	t.Helper()
	return startEndpointCtx(context.Background(), t, configure)
}

// startEndpointCtx is startEndpoint until parent ends (or the test does).
func startEndpointCtx(parent context.Context, t testing.TB, configure func(*apiserver.Options)) string {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := apiserver.NewOptions()
	opts.BindAddress = ln.Addr().String()
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	configure(opts)
	cfg := &apiserver.Config{Options: opts, ReviewConfig: countTokenReviews(mgr.GetConfig()), Listener: ln, Log: logr.Discard()}
	completed, err := cfg.Complete()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv := completed.New()
	informer, err := mgr.GetCache().GetInformer(ctx, &workflowv1alpha1.WorkflowTask{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	reg, err := informer.AddEventHandler(srv.TaskEvents())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() { _ = informer.RemoveEventHandler(reg) })
	t.Cleanup(func() { cancel(); <-done })
	return "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
