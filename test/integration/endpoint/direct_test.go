package endpoint_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var uuidRe = regexp.MustCompile(`"correlation_id":"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"`)

const empty = `{"data":{},"code":0,"msg":""}`

func bindProgressAdminB(b testing.TB, username string) {
	b.Helper()
	err := k8sClient.Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "progress-admin-" + strings.NewReplacer(":", "-").Replace(username)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "workflowtask-progress-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: username}},
	})
	if err != nil {
		b.Fatal(err)
	}
}

// A client polling every so often costs the API server nothing after its first request: the
// task comes from the informer cache, the TokenReview from the authenticator's cache.
func TestPollingIsServedFromCaches(t *testing.T) {
	sa := newSAUser(t, "users", "poller")
	task := createTaskWithProgress(t, testutil.MakeTask("polled", "team-a").Owner(sa.name), entry("upload", 1, 2, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	get(t, "GET", path, sa.token)
	before := tokenReviews.Load()
	for range 100 {
		if _, body := get(t, "GET", path, sa.token); !strings.Contains(string(body), `"upload"`) {
			t.Fatalf("body %s", body)
		}
	}
	if n := tokenReviews.Load() - before; n != 0 {
		t.Errorf("%d TokenReviews for 100 polls of a token already reviewed; want 0", n)
	}
}

// bindProgressAdmin binds the shipped progress-admin ClusterRole to a user, cluster-wide
// (namespace "") or in one namespace.
func bindProgressAdmin(t *testing.T, username, namespace string) {
	t.Helper()
	ctx := context.Background()
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "workflowtask-progress-admin"}
	subjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: username}}
	name := "progress-admin-" + strings.NewReplacer(":", "-").Replace(username)
	var err error
	if namespace == "" {
		err = k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, RoleRef: ref, Subjects: subjects})
	} else {
		err = k8sClient.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, RoleRef: ref, Subjects: subjects})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// roleBinding is the binding bindProgressAdmin made in namespace for username.
func roleBinding(namespace, username string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: namespace,
		Name: "progress-admin-" + strings.NewReplacer(":", "-").Replace(username)}}
}

// Each kind of caller gets the exact body, over HTTPS with real tokens.
func TestWhoSeesWhat(t *testing.T) {
	owner := newSAUser(t, "users", "alice")
	stranger := newSAUser(t, "users", "bob")
	clusterAdmin := newSAUser(t, "users", "carol")
	nsAdmin := newSAUser(t, "users", "dave")
	withProgress := createTaskWithProgress(t, testutil.MakeTask("uploading", "team-a").Owner(owner.name),
		entry("upload", 16889, 12836332, ""), entry("upload_count", 25, 34, ""), entry("upload_single_0", 5, 10, "/dst/a.bin"))
	noProgress := createTaskWithProgress(t, testutil.MakeTask("quiet", "team-a").Owner(stranger.name))
	inTeamB := createTaskWithProgress(t, testutil.MakeTask("relocating", "team-b").Owner(owner.name), entry("relocate", 1, 2, ""))
	bindProgressAdmin(t, clusterAdmin.name, "")
	bindProgressAdmin(t, nsAdmin.name, "team-b")
	id := func(task *workflowv1alpha1.WorkflowTask) string { return workflowv1alpha1.TaskIDFromUID(task.UID) }
	const full = `{"data":{"upload":{"total":12836332,"current":16889,"identifier":""},` +
		`"upload_count":{"total":34,"current":25,"identifier":""},` +
		`"upload_single_0":{"total":10,"current":5,"identifier":"/dst/a.bin"}},"code":0,"msg":""}`

	// The RoleBinding and ClusterRoleBinding may take a moment to reach the authorizer.
	gomega.NewWithT(t).Eventually(func() string {
		_, b := get(t, "GET", "/workflow/progress/"+id(inTeamB), nsAdmin.token)
		return string(b)
	}).Should(gomega.Equal(`{"data":{"relocate":{"total":2,"current":1,"identifier":""}},"code":0,"msg":""}`))

	cases := map[string]struct {
		token, path, want string
	}{
		"owner":                                 {owner.token, "/workflow/progress/" + id(withProgress), full},
		"owner, under the Cloudreve prefix":     {owner.token, "/api/v4/workflow/progress/" + id(withProgress), full},
		"stranger":                              {stranger.token, "/workflow/progress/" + id(withProgress), empty},
		"stranger, unknown task":                {stranger.token, "/workflow/progress/AAAAAAAAAA", empty},
		"owner of a task without progress":      {stranger.token, "/workflow/progress/" + id(noProgress), empty},
		"admin by ClusterRoleBinding":           {clusterAdmin.token, "/workflow/progress/" + id(withProgress), full},
		"admin by RoleBinding, its namespace":   {nsAdmin.token, "/workflow/progress/" + id(inTeamB), `{"data":{"relocate":{"total":2,"current":1,"identifier":""}},"code":0,"msg":""}`},
		"admin by RoleBinding, other namespace": {nsAdmin.token, "/workflow/progress/" + id(withProgress), empty},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			status, body := get(t, "GET", tc.path, tc.token)
			if status != http.StatusOK {
				t.Errorf("HTTP %d", status)
			}
			if diff := cmp.Diff(tc.want, string(body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

// Callers who are not authenticated get 401 "Login required" with a correlation ID; tokens
// that are not JWTs never cost a TokenReview.
func TestLoginRequired(t *testing.T) {
	ctx := context.Background()
	sa := newSAUser(t, "users", "erin")
	task := createTaskWithProgress(t, testutil.MakeTask("secret", "team-a").Owner(sa.name), entry("upload", 1, 2, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)

	wrongAudience, err := testenv.Token(ctx, adminCfg, "users", "erin", "some-other-service")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		token        string
		header       []string
		maxTokenRevs int64
	}{
		"no credentials":               {},
		"not a JWT":                    {token: "hunter2"},
		"basic auth":                   {header: []string{"Authorization", "Basic YWxpY2U6cHc="}},
		"oversized JWT-ish":            {token: strings.Repeat("a", frontdoor.MaxTokenBytes) + ".e30.c2ln"},
		"JWT-shaped garbage":           {token: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + ".e30.c2ln", maxTokenRevs: 1},
		"expired":                      {token: expiredToken(t, sa.token), maxTokenRevs: 1},
		"wrong audience":               {token: wrongAudience, maxTokenRevs: 1},
		"front-proxy headers, no cert": {header: []string{"X-Remote-User", sa.name, "X-Remote-Group", "system:masters"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := tokenReviews.Load()
			_, body := get(t, "GET", path, tc.token, tc.header...)
			got := uuidRe.ReplaceAllString(string(body), `"correlation_id":"<uuid>"`)
			if want := `{"code":401,"msg":"Login required","correlation_id":"<uuid>"}`; got != want {
				t.Errorf("body %s, want %s", body, want)
			}
			if n := tokenReviews.Load() - before; n > tc.maxTokenRevs {
				t.Errorf("%d TokenReviews, want at most %d", n, tc.maxTokenRevs)
			}
		})
	}
	// And the valid token of the same account does see it.
	if _, body := get(t, "GET", path, sa.token); !strings.Contains(string(body), `"upload"`) {
		t.Errorf("owner's valid token: %s", body)
	}
}

// expiredToken re-signs a real token's claims with the API server's service-account key and an
// expiry in the past: a genuine signature, and expired.
func expiredToken(t *testing.T, token string) string {
	t.Helper()
	key, err := testenv.ServiceAccountSigner(env.ControlPlane.GetAPIServer().CertDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	out, err := testenv.Resign(token, key, func(claims map[string]any) {
		claims["iat"], claims["nbf"], claims["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Unique garbage tokens cannot flood the API server: reviews in flight stay bounded.
func TestGarbageTokensAreBounded(t *testing.T) {
	before := tokenReviews.Load()
	var wg sync.WaitGroup // at once: the ones over the client's budget of failed logins wait for their 429
	for i := range 50 {
		wg.Go(func() {
			tok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + ".e30." + strings.Repeat("x", i+1)
			get(t, "GET", "/workflow/progress/AAAAAAAAAA", tok)
		})
	}
	wg.Wait()
	// Each unique JWT-shaped token costs at most one review (no retries of a clean "no").
	if n := tokenReviews.Load() - before; n > 50 {
		t.Errorf("%d TokenReviews for 50 unique tokens", n)
	}
	// The same token again is answered from the cache (from a client of its own: this one is
	// over its budget of failed logins now, and its new tokens are not reviewed at all).
	tok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + ".e30.again"
	fresh := clientFrom(net.IPv4(127, 0, 8, 1))
	call(t, fresh, "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+tok)
	before = tokenReviews.Load()
	for range 20 {
		call(t, fresh, "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+tok)
	}
	if n := tokenReviews.Load() - before; n != 0 {
		t.Errorf("%d TokenReviews for a token reviewed a moment ago; want 0 (cached)", n)
	}
}

// Bad ids, paths and methods get a defined answer, never a 5xx, through the real server.
func TestBadRequests(t *testing.T) {
	sa := newSAUser(t, "users", "frank")
	cases := map[string]struct {
		method, path string
		wantCode     int
	}{
		"empty id":       {"GET", "/workflow/progress/", apiserver.CodeParamErr},
		"one char":       {"GET", "/workflow/progress/a", apiserver.CodeParamErr},
		"1 MB id":        {"GET", "/workflow/progress/" + strings.Repeat("a", 1<<20), -1},
		"dot-dot":        {"GET", "/workflow/progress/..", apiserver.CodeParamErr},
		"NUL":            {"GET", "/workflow/progress/%00", apiserver.CodeParamErr},
		"unicode":        {"GET", "/workflow/progress/%E2%9C%93abcdefgh", apiserver.CodeParamErr},
		"wrong alphabet": {"GET", "/workflow/progress/abc_def-gh", apiserver.CodeParamErr},
		"trailing slash": {"GET", "/workflow/progress/AAAAAAAAAA/", apiserver.CodeNotFound},
		"extra segment":  {"GET", "/workflow/progress/AAAAAAAAAA/x", apiserver.CodeNotFound},
		"encoded slash":  {"GET", "/workflow/progress/AAAAA%2FAAAA", apiserver.CodeNotFound},
		"POST":           {"POST", "/workflow/progress/AAAAAAAAAA", apiserver.CodeMethod},
		"HEAD":           {"HEAD", "/workflow/progress/AAAAAAAAAA", -2},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			status, body := get(t, tc.method, tc.path, sa.token)
			switch tc.wantCode {
			case -1: // larger than the server's header limit: net/http's own 431, not a 5xx
				if status != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("HTTP %d, want 431", status)
				}
				return
			case -2:
				if status != http.StatusOK || len(body) != 0 {
					t.Errorf("HEAD: HTTP %d, %d body bytes", status, len(body))
				}
				return
			}
			var env struct{ Code int }
			if err := json.Unmarshal(body, &env); err != nil || env.Code != tc.wantCode || status != http.StatusOK {
				t.Errorf("HTTP %d body %s; want code %d", status, body, tc.wantCode)
			}
		})
	}
}

// The correlation ID comes from X-Cr-Correlation-Id when it is a UUID, else a new one.
func TestCorrelationID(t *testing.T) {
	const mine = "b4351ecc-ee1a-4455-bc94-2c3dbcc58538"
	_, body := get(t, "GET", "/workflow/progress/x", "", "X-Cr-Correlation-Id", mine)
	if !strings.Contains(string(body), mine) {
		t.Errorf("given correlation ID not used: %s", body)
	}
	_, body = get(t, "GET", "/workflow/progress/x", "", "X-Cr-Correlation-Id", "not-a-uuid {forged log line}")
	if strings.Contains(string(body), "forged") || !uuidRe.Match(body) {
		t.Errorf("malformed correlation ID echoed: %s", body)
	}
}

// Progress written by a script with a plain `kubectl patch --subresource=status` carries no
// updateTime; the endpoint shows it like any other.
func TestProgressWithoutUpdateTimeIsShown(t *testing.T) {
	ctx := context.Background()
	owner := newSAUser(t, "users", "erin")
	task := createTaskWithProgress(t, testutil.MakeTask("scripted", "team-c").Owner(owner.name))
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, env.ControlPlane.KubectlPath, "--kubeconfig", kubeconfig, "-n", task.Namespace,
		"patch", "workflowtask", task.Name, "--subresource=status", "--type=merge",
		"-p", `{"status":{"progress":[{"type":"upload_count","current":3,"total":7}]}}`).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl patch: %v\n%s", err, out)
	}
	want := `{"data":{"upload_count":{"total":7,"current":3,"identifier":""}},"code":0,"msg":""}`
	gomega.NewWithT(t).Eventually(func() string {
		_, b := get(t, "GET", "/workflow/progress/"+workflowv1alpha1.TaskIDFromUID(task.UID), owner.token)
		return string(b)
	}).Should(gomega.Equal(want))
}
