package testenv

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"k8s.io/client-go/rest"
)

// JunkJWT is a JWT-shaped token no one issued, with no issuer (no one can check it but by a
// TokenReview), unique for i, padded to about size bytes.
func JunkJWT(i, size int) string {
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`))
	sig := fmt.Sprintf("junk%d", i)
	if pad := size - len(head) - len(sig) - 6; pad > 0 {
		sig += strings.Repeat("x", pad)
	}
	return head + ".e30." + sig
}

// Forger makes tokens that claim to be the cluster's — its service-account issuer, key ID and
// audience, a ServiceAccount subject, current times, from a real token — signed by a key the
// cluster never had.
type Forger struct {
	header string
	claims map[string]any
	key    *rsa.PrivateKey
	seq    atomic.Int64
}

// NewForger takes a real token of ServiceAccount ns/name (created when missing) as its template.
func NewForger(ctx context.Context, admin *rest.Config, ns, name string) (*Forger, error) {
	_, genuine, err := ServiceAccountConfig(ctx, admin, ns, name)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(genuine, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	f := &Forger{header: parts[0]}
	if err := json.Unmarshal(raw, &f.claims); err != nil {
		return nil, err
	}
	if f.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	return f, nil
}

// Token is a forged token for subject (empty: the template's), unique each call.
func (f *Forger) Token(subject string) (string, error) {
	claims := map[string]any{}
	for k, v := range f.claims {
		claims[k] = v
	}
	if subject != "" {
		claims["sub"] = subject
	}
	claims["jti"] = fmt.Sprint("forged-", f.seq.Add(1))
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := f.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// OnTokenReview returns cfg calling hook before each TokenReview it sends (to count them, or
// hold them as a slow API server would).
func OnTokenReview(cfg *rest.Config, hook func()) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokenreviews") {
				hook()
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
