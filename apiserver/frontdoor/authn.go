package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Authenticator is the door's credential check for one listener.
type Authenticator struct {
	door      *Door
	delegate  authenticator.Request
	audiences authenticator.Audiences
	known     *knownTokens
}

// TokensMetric counts bearer tokens by what the door concluded about them.
const TokensMetric = "workflowtask_door_tokens_total"

// Results of TokensMetric.
const (
	resultKnown          = "known"           // authenticated within the cache TTL: no review
	resultNotJWT         = "refused_shape"   // not a JWT, oversized, or in the wrong place
	resultForged         = "refused_locally" // the issuer's, but signature, time or audience fail
	resultVerified       = "verified"        // the issuer's signature holds: reviewed
	resultUnverifiable   = "unverifiable"    // not checkable here: reviewed within budget
	resultAddressBudget  = "over_address_budget"
	resultIdentityBudget = "over_identity_budget"
	resultGlobalBudget   = "over_unverifiable_budget" // reviews of uncheckable tokens, all clients
	resultRefusedAgain   = "refused_again"            // verified, but refused by TokenReview within the cache TTL
)

// tokensTotal is TokensMetric's counter of each result, bound once (a label lookup per request
// would cost the hot path a hash and a lock).
var tokensTotal = func() map[string]prometheus.Counter {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: TokensMetric,
		Help: "Bearer tokens presented at the operator's listeners, by what the front door concluded."}, []string{"result"})
	_ = ctrlmetrics.Registry.Register(c)
	out := map[string]prometheus.Counter{}
	for _, r := range []string{resultKnown, resultNotJWT, resultForged, resultVerified, resultUnverifiable,
		resultAddressBudget, resultIdentityBudget, resultGlobalBudget, resultRefusedAgain} {
		out[r] = c.WithLabelValues(r)
	}
	return out
}()

// Authenticate identifies the caller of r, and on success keeps its connection alive (see the
// package doc for the rules; a 429 for want of a review slot to a token whose signature held
// keeps it too, untrusted). A refusal is charged to the client address's budget of failed
// logins; over it, the refusal waits the tarpit and is ErrLoginBudget. Errors:
// ErrNotAuthenticated, ErrBusy, ErrLoginBudget, ErrIdentityBudget.
func (a *Authenticator) Authenticate(w http.ResponseWriter, r *http.Request) (user.Info, error) {
	u, charged, err := a.identify(r)
	switch {
	case err == nil:
		trust(w, r)
		return u, nil
	case errors.Is(err, errBusySigned):
		keepAlive(w)
		return nil, err
	case errors.Is(err, ErrNotAuthenticated) && !charged && a.door.Refused(r):
		return nil, ErrLoginBudget
	}
	return nil, err
}

// Refused charges an answer given without authentication to the client's budget (see
// Door.Refused).
func (a *Authenticator) Refused(r *http.Request) bool { return a.door.Refused(r) }

// identify is Authenticate's work; charged says a failed login was already taken from the
// client's budget (a token reviewed because it could not be checked here).
func (a *Authenticator) identify(r *http.Request) (user.Info, bool, error) {
	cred := credentialOf(r)
	if cred.refused {
		tokensTotal[resultNotJWT].Inc()
		return nil, false, ErrNotAuthenticated
	}
	if cred.token == "" { // a client certificate or the aggregation layer's front proxy: no review
		u, err := a.review(r)
		return u, false, err
	}
	now := time.Now()
	if u, ok := a.known.get(cred.token, now); ok {
		tokensTotal[resultKnown].Inc()
		return u, false, nil
	}
	tok := parseJWT(cred.token)
	if tok == nil {
		tokensTotal[resultNotJWT].Inc()
		return nil, false, ErrNotAuthenticated
	}
	var u user.Info
	var err error
	switch v, _ := a.door.keys.check(r.Context(), tok, a.audiences, now); v {
	case forged:
		tokensTotal[resultForged].Inc()
		return nil, false, ErrNotAuthenticated
	case verified:
		u, err = a.reviewVerified(r, tok, now)
	default:
		u, err = a.reviewUnverifiable(r, now)
		if err != nil {
			return nil, true, err
		}
	}
	if err != nil {
		return nil, false, err
	}
	var expiry time.Time
	if tok.claims.Expiry > 0 {
		expiry = time.Unix(tok.claims.Expiry, 0)
	}
	a.known.add(cred.token, u, now, expiry)
	return u, false, nil
}

// reviewVerified reviews a token whose signature held here, charged to its identity's budget
// of new tokens: whoever can mint tokens cannot make the door review without bound. A token
// kube-apiserver refused within the cache TTL (revoked, its pod gone, not for its audience) is
// refused again with no review and nothing of the budget: whoever holds it cannot spend its
// identity's budget — and so lock the identity's new tokens out — by presenting it again and
// again.
func (a *Authenticator) reviewVerified(r *http.Request, tok *bearerToken, now time.Time) (user.Info, error) {
	if a.door.rejected.refused(a.audiences, tok.raw) {
		tokensTotal[resultRefusedAgain].Inc()
		return nil, ErrNotAuthenticated
	}
	tokensTotal[resultVerified].Inc()
	id := tok.budgetKey()
	if !a.door.identities.reserve(id, now) {
		tokensTotal[resultIdentityBudget].Inc()
		return nil, ErrIdentityBudget
	}
	u, err := a.review(r)
	if errors.Is(err, ErrBusy) {
		a.door.identities.refund(id, time.Now()) // not reviewed
		return nil, errBusySigned
	}
	return u, err
}

// errBusySigned is ErrBusy for a token whose signature held here (minted by the cluster for
// this audience, not expired): its connection is kept for the retry the 429 asks for, not
// trusted (still closed for a newcomer when the table is full). Closing it would make every
// retry a new TLS handshake — after a new leader, thousands of pods' at once.
var errBusySigned = fmt.Errorf("%w (the token's signature holds)", ErrBusy)

// reviewUnverifiable reviews a token that could not be checked here, charged to the client
// address's budget of failed logins (given back when it authenticates, unless its identity is
// over its budget of new tokens). A client over budget waits the tarpit for its refusal.
func (a *Authenticator) reviewUnverifiable(r *http.Request, now time.Time) (user.Info, error) {
	tokensTotal[resultUnverifiable].Inc()
	client := a.door.clients.key(r)
	if !a.door.logins.reserve(client, now) {
		tokensTotal[resultAddressBudget].Inc()
		// Slowed down, not only refused: each of the client's connections gets an answer at
		// most once per tarpit, so a flood costs next to nothing (the wait holds no slot).
		tarpit(r.Context(), a.door.opts.Tarpit)
		return nil, ErrLoginBudget
	}
	if !a.door.unverifiable.reserve("", now) { // many addresses at once: all of them wait
		a.door.logins.refund(client, now)
		tokensTotal[resultGlobalBudget].Inc()
		tarpit(r.Context(), a.door.opts.Tarpit)
		return nil, ErrLoginBudget
	}
	u, err := a.review(r)
	switch {
	case errors.Is(err, ErrBusy):
		a.door.logins.refund(client, time.Now())
		a.door.unverifiable.refund("", time.Now())
		return nil, err
	case err != nil:
		return nil, err // the failed login stays spent
	case !a.door.identities.reserve(u.GetName(), now):
		tokensTotal[resultIdentityBudget].Inc()
		return nil, ErrIdentityBudget // and the client's failed login stays spent
	}
	a.door.logins.refund(client, time.Now())
	return u, nil
}

// review asks k8s.io/apiserver's delegating authenticator: the front proxy's certificate and
// headers, a client certificate, or the bearer token by TokenReview.
func (a *Authenticator) review(r *http.Request) (user.Info, error) {
	if len(a.audiences) > 0 { // as kube-apiserver's authentication filter does
		r = r.WithContext(authenticator.WithAudiences(r.Context(), a.audiences))
	}
	resp, ok, err := a.delegate.AuthenticateRequest(r)
	switch {
	case errors.Is(err, ErrBusy):
		return nil, ErrBusy
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() != nil: // the request's own deadline
		return nil, ErrBusy
	case err != nil || !ok || resp == nil || resp.User == nil || resp.User.GetName() == "" ||
		len(a.audiences) > 0 && len(resp.Audiences) > 0 && len(a.audiences.Intersect(resp.Audiences)) == 0:
		return nil, ErrNotAuthenticated
	}
	return resp.User, nil
}

// tarpit waits d, or until ctx ends.
func tarpit(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
