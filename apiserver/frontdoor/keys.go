package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// +kubebuilder:rbac:urls=/.well-known/openid-configuration;/openid/v1/jwks,verbs=get

// The paths at which kube-apiserver publishes its service-account issuer and keys (readable by
// every ServiceAccount through the bootstrap ClusterRoleBinding
// system:service-account-issuer-discovery; the operator's ClusterRole names them too).
const (
	OpenIDConfigurationPath = "/.well-known/openid-configuration"
	JWKSPath                = "/openid/v1/jwks"
)

// signingAlgorithms are the algorithms kube-apiserver signs service-account tokens with (RSA and
// ECDSA keys).
var signingAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512}

// clockLeeway is how far a token's exp and nbf may be off this process's clock before it is
// refused here; within it, TokenReview decides.
const clockLeeway = time.Minute

// verdict is what checking a token here concluded.
type verdict int

const (
	// unverifiable: not a token of the cluster's service-account issuer (OIDC, legacy), or the
	// keys are not known yet: TokenReview decides, within the client address's budget.
	unverifiable verdict = iota
	// verified: the issuer's signature holds and the token is current and for this door's
	// audience: TokenReview decides revocation and bound objects, within the identity's budget.
	verified
	// forged: claims to be the issuer's but is not (signature, key, algorithm), or is expired
	// or for another audience: refused here, without a review.
	forged
)

// KeySet is the cluster's service-account issuer and its public keys, read from kube-apiserver
// and refreshed when a token names a key it does not hold (at most once per minRefresh) and
// every refreshEvery.
type KeySet struct {
	client       rest.Interface
	minRefresh   time.Duration
	refreshEvery time.Duration
	log          logr.Logger

	mu      sync.RWMutex
	issuer  string
	keys    jose.JSONWebKeySet
	fetched time.Time // zero: never loaded
	group   singleflight.Group
}

// NewKeySet reads the issuer and keys with client (a REST client of kube-apiserver: absolute
// paths).
func NewKeySet(client rest.Interface, log logr.Logger) *KeySet {
	return &KeySet{client: client, minRefresh: 10 * time.Second, refreshEvery: 10 * time.Minute, log: log}
}

// Run loads the keys (retrying with backoff until it can) and refreshes them until ctx ends.
// Until they are loaded, every token is unverifiable: reviewed within budgets.
func (k *KeySet) Run(ctx context.Context) {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 7, Cap: time.Minute}
	for ctx.Err() == nil {
		if err := k.refresh(ctx); err != nil {
			d := backoff.Step()
			k.log.Error(err, "Reading the service-account issuer's keys; tokens are reviewed by kube-apiserver meanwhile", "retryIn", d)
			sleep(ctx, d)
			continue
		}
		backoff = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 7, Cap: time.Minute}
		sleep(ctx, k.refreshEvery)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Issuer is the service-account issuer, empty until loaded.
func (k *KeySet) Issuer() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.issuer
}

// refresh reads the issuer and its keys (one read at a time, shared by concurrent callers).
func (k *KeySet) refresh(ctx context.Context) error {
	_, err, _ := k.group.Do("refresh", func() (any, error) {
		var discovery struct {
			Issuer string `json:"issuer"`
		}
		raw, err := k.client.Get().AbsPath(OpenIDConfigurationPath).Do(ctx).Raw()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", OpenIDConfigurationPath, err)
		}
		if err := json.Unmarshal(raw, &discovery); err != nil || discovery.Issuer == "" {
			return nil, fmt.Errorf("reading %s: no issuer (%w)", OpenIDConfigurationPath, err)
		}
		if raw, err = k.client.Get().AbsPath(JWKSPath).Do(ctx).Raw(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", JWKSPath, err)
		}
		var keys jose.JSONWebKeySet
		if err := json.Unmarshal(raw, &keys); err != nil {
			return nil, fmt.Errorf("reading %s: %w", JWKSPath, err)
		}
		k.mu.Lock()
		k.issuer, k.keys, k.fetched = discovery.Issuer, keys, time.Now()
		k.mu.Unlock()
		return nil, nil
	})
	return err
}

// keysFor returns the keys a token naming kid may be signed with, and whether the set is
// loaded at all.
func (k *KeySet) keysFor(kid string) ([]jose.JSONWebKey, bool, time.Time) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if kid == "" {
		return k.keys.Keys, !k.fetched.IsZero(), k.fetched
	}
	return k.keys.Key(kid), !k.fetched.IsZero(), k.fetched
}

var errForged = errors.New("not signed by the service-account issuer")

// check is what can be concluded here about tok for a door taking audiences (empty: any).
func (k *KeySet) check(ctx context.Context, tok *bearerToken, audiences []string, now time.Time) (verdict, error) {
	if k == nil || tok.claims.Issuer == "" || tok.claims.Issuer != k.Issuer() {
		return unverifiable, nil
	}
	keys, loaded, fetched := k.keysFor(tok.header.KeyID)
	if !loaded {
		return unverifiable, nil
	}
	if len(keys) == 0 && time.Since(fetched) >= k.minRefresh { // a key newer than ours?
		if err := k.refresh(ctx); err != nil {
			return unverifiable, nil //nolint:nilerr // the keys could not be read: TokenReview decides
		}
		keys, _, _ = k.keysFor(tok.header.KeyID)
	}
	if len(keys) == 0 {
		return forged, fmt.Errorf("%w: no key %q", errForged, tok.header.KeyID)
	}
	sig, err := jose.ParseSignedCompact(tok.raw, signingAlgorithms)
	if err != nil {
		return forged, fmt.Errorf("%w: %w", errForged, err)
	}
	verifiedKey := false
	for i := range keys {
		if _, err := sig.Verify(&keys[i]); err == nil {
			verifiedKey = true
			break
		}
	}
	switch {
	case !verifiedKey:
		return forged, errForged
	case tok.claims.Subject == "":
		return forged, errors.New("no subject")
	case tok.claims.Expiry != 0 && now.After(time.Unix(tok.claims.Expiry, 0).Add(clockLeeway)):
		return forged, errors.New("expired")
	case tok.claims.NotBefore != 0 && now.Add(clockLeeway).Before(time.Unix(tok.claims.NotBefore, 0)):
		return forged, errors.New("not yet valid")
	case len(audiences) > 0 && !intersects(audiences, tok.claims.Audience):
		return forged, errors.New("for another audience")
	}
	return verified, nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
