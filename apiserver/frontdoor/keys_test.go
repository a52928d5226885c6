package frontdoor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const testIssuer = "https://kubernetes.default.svc"

// issuerServer publishes an issuer and its keys as kube-apiserver does, counting key reads.
type issuerServer struct {
	keys  atomic.Pointer[jose.JSONWebKeySet]
	reads atomic.Int64
}

func (s *issuerServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case OpenIDConfigurationPath:
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": testIssuer, "jwks_uri": "https://x" + JWKSPath})
	case JWKSPath:
		s.reads.Add(1)
		_ = json.NewEncoder(w).Encode(s.keys.Load())
	default:
		http.NotFound(w, r)
	}
}

func sign(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A token of the cluster's issuer is verified here against the published keys: a good one is
// verified; a forged signature, an unknown key, a foreign algorithm, an expired or wrong-audience
// token are forged; a token of another issuer is unverifiable. An unknown key ID reads the keys
// again at most once per minRefresh, and a key added since is then found.
func TestKeySetCheck(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv := &issuerServer{}
	srv.keys.Store(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKey.Public(), KeyID: "rsa", Algorithm: "RS256", Use: "sig"}}})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	cs := kubernetes.NewForConfigOrDie(&rest.Config{Host: ts.URL})
	ks := NewKeySet(cs.Discovery().RESTClient(), logr.Discard())
	ks.minRefresh = time.Hour
	ctx := context.Background()
	now := time.Now()
	claims := func(mut func(map[string]any)) map[string]any {
		c := map[string]any{"iss": testIssuer, "sub": "system:serviceaccount:ns:alice", "aud": []string{"progress.taskops.dev"},
			"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	check := func(raw string, audiences ...string) verdict {
		tok := parseJWT(raw)
		if tok == nil {
			t.Fatalf("not JWT-shaped: %s", raw)
		}
		v, _ := ks.check(ctx, tok, audiences, now)
		return v
	}
	good := sign(t, rsaKey, jose.RS256, "rsa", claims(nil))
	if v := check(good, "progress.taskops.dev"); v != unverifiable {
		t.Errorf("before the keys are loaded: %v, want unverifiable", v)
	}
	if err := ks.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	reads := srv.reads.Load()
	cases := []struct {
		name      string
		token     string
		audiences []string
		want      verdict
	}{
		{"good", good, []string{"progress.taskops.dev"}, verified},
		{"good, any audience", good, nil, verified},
		{"wrong audience", good, []string{"other"}, forged},
		{"signed by another key, same kid", sign(t, otherKey, jose.RS256, "rsa", claims(nil)), nil, forged},
		{"expired", sign(t, rsaKey, jose.RS256, "rsa", claims(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() })), nil, forged},
		{"expired within the leeway", sign(t, rsaKey, jose.RS256, "rsa", claims(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() })), nil, verified},
		{"not yet valid", sign(t, rsaKey, jose.RS256, "rsa", claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), nil, forged},
		{"no subject", sign(t, rsaKey, jose.RS256, "rsa", claims(func(c map[string]any) { delete(c, "sub") })), nil, forged},
		{"HMAC with the public key", sign(t, []byte("a shared secret of at least 32 bytes"), jose.HS256, "rsa", claims(nil)), nil, forged},
		{"unknown key", sign(t, otherKey, jose.RS256, "nope", claims(nil)), nil, forged},
		{"another issuer", sign(t, otherKey, jose.RS256, "rsa", claims(func(c map[string]any) { c["iss"] = "https://oidc.example" })), nil, unverifiable},
		{"no issuer", sign(t, otherKey, jose.RS256, "rsa", claims(func(c map[string]any) { delete(c, "iss") })), nil, unverifiable},
	}
	for _, tc := range cases {
		if got := check(tc.token, tc.audiences...); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := srv.reads.Load() - reads; n != 0 {
		t.Errorf("%d key reads for unknown keys within minRefresh; want 0", n)
	}

	// A new key (rotation): found after one read once minRefresh has passed.
	srv.keys.Store(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: rsaKey.Public(), KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
		{Key: ecKey.Public(), KeyID: "ec", Algorithm: "ES256", Use: "sig"}}})
	ecToken := sign(t, ecKey, jose.ES256, "ec", claims(nil))
	if v := check(ecToken); v != forged {
		t.Errorf("a new key within minRefresh: %v, want forged (not read again)", v)
	}
	ks.minRefresh = 0
	if v := check(ecToken); v != verified {
		t.Errorf("a new key after minRefresh: %v, want verified", v)
	}
	if n := srv.reads.Load() - reads; n != 1 {
		t.Errorf("%d key reads, want 1", n)
	}
}

func (v verdict) String() string {
	return map[verdict]string{unverifiable: "unverifiable", verified: "verified", forged: "forged"}[v]
}
