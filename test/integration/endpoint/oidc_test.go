package endpoint_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// oidcAudience is the audience the test cluster's JWT authenticator expects.
const oidcAudience = "workflowtask-test"

// oidcIssuer is an OpenID Connect issuer the test cluster trusts (kube-apiserver's
// --authentication-config): discovery and JWKS over HTTPS, and RS256 tokens signed with its key.
type oidcIssuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
}

func newOIDCIssuer() (*oidcIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	o := &oidcIssuer{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": o.srv.URL, "jwks_uri": o.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test-key",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	o.srv = httptest.NewTLSServer(mux)
	return o, nil
}

// authenticationConfig writes the AuthenticationConfiguration that makes kube-apiserver trust the
// issuer, mapping "sub" to the username "oidc:<sub>".
func (o *oidcIssuer) authenticationConfig(dir string) (string, error) {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.srv.Certificate().Raw})
	indented := ""
	for _, line := range strings.Split(strings.TrimRight(string(ca), "\n"), "\n") {
		indented += "      " + line + "\n"
	}
	cfg := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%s]
    certificateAuthority: |
%s  claimMappings:
    username:
      claim: sub
      prefix: "oidc:"
`, o.srv.URL, oidcAudience, indented)
	path := filepath.Join(dir, "authentication-config.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// token signs an ID token for sub with key (the issuer's, or another one to forge).
func (o *oidcIssuer) token(sub string, key *rsa.PrivateKey) string {
	now := time.Now()
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "test-key", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"iss": o.srv.URL, "aud": oidcAudience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// An OIDC token the cluster trusts authenticates at the endpoint (through TokenReview, with no
// audience pinned); a token with a forged signature does not.
func TestOIDCToken(t *testing.T) {
	task := createTaskWithProgress(t, testutil.MakeTask("oidc-owned", "team-a").Owner("oidc:carol"), entry("download", 5, 10, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	const want = `{"data":{"download":{"total":10,"current":5,"identifier":""}},"code":0,"msg":""}`
	// The API server fetches the issuer's keys in the background after it starts.
	gomega.NewWithT(t).Eventually(func() string {
		_, b := get(t, "GET", path, oidc.token("carol", oidc.key))
		return string(b)
	}).Should(gomega.Equal(want))

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, b := get(t, "GET", path, oidc.token("carol", other)); !uuidRe.Match(b) || !strings.HasPrefix(string(b), `{"code":401,"msg":"Login required"`) {
		t.Errorf("forged OIDC token: %s", b)
	}
	if _, b := get(t, "GET", path, oidc.token("mallory", oidc.key)); string(b) != empty {
		t.Errorf("another OIDC user: %s", b)
	}
}
