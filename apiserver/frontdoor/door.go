// Package frontdoor is the one front door of every listener the operator's binary opens (the
// progress endpoint, the metrics port, the health probes): the same rules for connections and
// credentials, and one set of budgets shared by all of them.
//
// Connections: a table per listener bounds them per client address (IPv6 by /64) and in total
// without ever blocking accepts; a newcomer takes the place of the oldest connection that never
// authenticated (or an idle one), so nobody holds a port by holding connections; the TLS
// handshake and the headers must arrive within a short deadline, and an answer to a request
// that did not authenticate closes its connection — but for a 429 to a token whose signature
// held here when no review slot was free: its retry needs no new handshake.
//
// Credentials: a bearer token from the Authorization header only (never a WebSocket
// subprotocol), JWT-shaped and bounded in size. A token of the cluster's service-account issuer
// is checked here against the keys kube-apiserver publishes: a forged, expired or
// wrong-audience one is refused with no review; a verified one goes to TokenReview (which
// decides revocation and bound objects) within its identity's budget of new tokens, and never
// spends its address's budget, so a neighbour cannot lock it out. A token that cannot be checked
// here (OIDC, legacy) goes to TokenReview within its client address's budget of failed logins,
// which every refusal also spends (over it: a tarpit, then 429), so that no address gets
// refusals — each a TLS handshake — faster than the budget allows. A token that authenticated
// within the cache TTL is answered from memory. Reviews in flight are bounded, and only real
// reviews take a slot; refused tokens are remembered by hash. Client certificates and the
// aggregation layer's front proxy are checked against kube-apiserver's CAs.
package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Errors Authenticate returns.
var (
	// ErrNotAuthenticated: no credential, or one that was refused.
	ErrNotAuthenticated = errors.New("not authenticated")
	// ErrBusy: no review slot was free within the wait (429).
	ErrBusy = errors.New("too many reviews in flight")
	// ErrLoginBudget: the client address is over its budget of failed logins and may send no
	// new token that cannot be checked here (429, after a tarpit).
	ErrLoginBudget = errors.New("too many failed logins from this client")
	// ErrIdentityBudget: the identity is over its budget of new tokens (429).
	ErrIdentityBudget = errors.New("too many new tokens for this identity")
)

// Options are the door's credential rules and budgets, shared by every listener.
type Options struct {
	// CacheTTL is how long a token that authenticated, a refused token, and a
	// SubjectAccessReview's answer are remembered.
	CacheTTL time.Duration
	// MaxConcurrentReviews bounds TokenReviews and SubjectAccessReviews in flight; a request
	// waits at most ReviewWait for a slot.
	MaxConcurrentReviews int
	ReviewWait           time.Duration
	// FailedLoginsPerSecond and FailedLoginBurst are each client address's budget of tokens
	// that could not be checked here and were refused by TokenReview.
	FailedLoginsPerSecond float64
	FailedLoginBurst      int
	// NewTokensPerSecond and NewTokenBurst are each identity's budget of new tokens reviewed.
	NewTokensPerSecond float64
	NewTokenBurst      int
	// UnverifiableReviewsPerSecond bounds, across all clients, the reviews of new tokens that
	// cannot be checked here (twice as many at once): many addresses, each within its budget,
	// cannot make kube-apiserver review junk without bound. Tokens checked here are not held
	// to it.
	UnverifiableReviewsPerSecond float64
	// TrustedProxies are the addresses whose X-Forwarded-For names the client that budgets
	// are charged to; none by default.
	TrustedProxies []netip.Prefix
	// Tarpit is how long a client over its failed-login budget waits for its 429.
	Tarpit time.Duration
}

// DefaultOptions are the door's defaults.
func DefaultOptions() Options {
	return Options{CacheTTL: 10 * time.Second, MaxConcurrentReviews: 16, ReviewWait: time.Second,
		FailedLoginsPerSecond: 1, FailedLoginBurst: 20, NewTokensPerSecond: 1, NewTokenBurst: 30,
		UnverifiableReviewsPerSecond: 20, Tarpit: time.Second}
}

// Validate checks the options (flag names as the manager spells them).
func (o *Options) Validate() error {
	var errs []error
	if o.MaxConcurrentReviews < 1 {
		errs = append(errs, errors.New("--progress-max-concurrent-reviews must be at least 1"))
	}
	if o.ReviewWait <= 0 {
		errs = append(errs, errors.New("--progress-review-wait must be positive"))
	}
	if o.FailedLoginsPerSecond <= 0 || o.FailedLoginBurst < 1 {
		errs = append(errs, errors.New("--progress-failed-logins-per-second must be positive and --progress-failed-login-burst at least 1"))
	}
	if o.NewTokensPerSecond <= 0 || o.NewTokenBurst < 1 {
		errs = append(errs, errors.New("--progress-new-tokens-per-second must be positive and --progress-new-token-burst at least 1"))
	}
	if o.UnverifiableReviewsPerSecond <= 0 {
		errs = append(errs, errors.New("--progress-unverifiable-reviews-per-second must be positive"))
	}
	if o.CacheTTL < 0 {
		errs = append(errs, errors.New("--progress-auth-cache-ttl must not be negative"))
	}
	if o.Tarpit < 0 {
		errs = append(errs, errors.New("the tarpit must not be negative"))
	}
	return errors.Join(errs...)
}

// Bounds of the budgets' memory: the least recently seen keys are forgotten first.
const (
	maxBudgetClients    = 10000
	maxBudgetIdentities = 10000
)

// The ConfigMap in which kube-apiserver publishes its client CA and front-proxy settings.
const (
	authConfigMapNamespace = "kube-system"
	authConfigMapName      = "extension-apiserver-authentication"
)

// Door holds what every listener shares: the review clients (gated, refused tokens cached),
// the service-account keys, kube-apiserver's CAs, and the budgets.
type Door struct {
	opts         Options
	log          logr.Logger
	keys         *KeySet
	logins       *budget // by client address
	identities   *budget // by identity
	unverifiable *budget // one key: all reviews of tokens that cannot be checked here
	clients      clients
	rejected     *rejectionCache
	gate         *reviewGate

	tokenReviews  kubernetes.Interface
	accessReviews kubernetes.Interface
	// kube-apiserver's front-proxy CA and header names, and its client CA, kept current from
	// the authentication ConfigMap (without these running, front-proxy requests silently
	// become anonymous).
	requestHeaderCA, clientCA *dynamiccertificates.ConfigMapCAController
	requestHeader             *headerrequest.RequestHeaderAuthRequestController
}

// New builds the door on the manager's identity (cfg): it reviews tokens and access, reads
// the authentication ConfigMap and the service-account keys.
func New(cfg *rest.Config, opts Options, log logr.Logger) (*Door, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	// The review clients: no client-side rate limit (one client's junk would queue everyone's
	// first reviews behind it); the gate bounds reviews in flight instead, and only requests
	// that really send one take a slot. Refused tokens are answered from their cache before
	// the gate.
	d := &Door{opts: opts, log: log, clients: clients{proxies: opts.TrustedProxies},
		logins:     newBudget(opts.FailedLoginsPerSecond, opts.FailedLoginBurst, maxBudgetClients),
		identities: newBudget(opts.NewTokensPerSecond, opts.NewTokenBurst, maxBudgetIdentities),
		unverifiable: newBudget(opts.UnverifiableReviewsPerSecond,
			max(1, int(2*opts.UnverifiableReviewsPerSecond)), 1),
		rejected: newRejectionCache(opts.CacheTTL, clock.RealClock{}),
		gate:     newReviewGate(opts.MaxConcurrentReviews, opts.ReviewWait),
		keys:     NewKeySet(cs.Discovery().RESTClient(), log.WithName("service-account-keys")),
	}
	rc := rest.CopyConfig(cfg)
	rc.QPS = -1
	rc = d.gate.wrap(rc)
	if d.accessReviews, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("review client: %w", err)
	}
	if d.tokenReviews, err = kubernetes.NewForConfig(cacheRejectedTokenReviews(rc, d.rejected)); err != nil {
		return nil, fmt.Errorf("token review client: %w", err)
	}
	if d.requestHeaderCA, err = dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", authConfigMapNamespace, authConfigMapName, "requestheader-client-ca-file", cs); err != nil {
		return nil, fmt.Errorf("front-proxy CA: %w", err)
	}
	d.requestHeader = headerrequest.NewRequestHeaderAuthRequestController(authConfigMapName, authConfigMapNamespace, cs,
		"requestheader-username-headers", "requestheader-uid-headers", "requestheader-group-headers",
		"requestheader-extra-headers-prefix", "requestheader-allowed-names")
	if d.clientCA, err = dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", authConfigMapNamespace, authConfigMapName, "client-ca-file", cs); err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return d, nil
}

// Start loads kube-apiserver's CAs, header names and service-account keys and keeps them
// current until ctx ends. Failing to load them is not fatal: front-proxy and certificate
// callers are not recognised, and tokens are reviewed within budgets, until they load.
func (d *Door) Start(ctx context.Context) {
	for _, c := range []interface {
		RunOnce(context.Context) error
		Run(context.Context, int)
	}{d.requestHeaderCA, d.requestHeader, d.clientCA} {
		if err := c.RunOnce(ctx); err != nil {
			d.log.Error(err, "Loading the API server's authentication settings; retrying in the background")
		}
		go c.Run(ctx, 1)
	}
	go d.keys.Run(ctx)
}

// Refused charges a refused request (no credential, or one refused without a review) to its
// client address's budget of failed logins; over the budget it waits the tarpit and reports
// true. Listeners call it for every answer they give without authenticating (the health
// probes, unknown paths), so that no address gets unauthenticated answers — each a TLS
// handshake, as such answers close their connection — faster than its budget allows, while a
// neighbour with a token the door can verify is never held to it.
func (d *Door) Refused(r *http.Request) bool {
	if d.logins.reserve(d.clients.key(r), time.Now()) {
		return false
	}
	tokensTotal[resultAddressBudget].Inc()
	tarpit(r.Context(), d.opts.Tarpit)
	return true
}

// RejectedTokenCacheBytes is the counted size of the cache of refused tokens.
func (d *Door) RejectedTokenCacheBytes() int { return d.rejected.Bytes() }

// Authorizer is a SubjectAccessReview authorizer on the door's gated review client, caching
// answers for the cache TTL.
func (d *Door) Authorizer() (authorizer.Authorizer, error) {
	backoff := retryBackoff()
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: d.accessReviews.AuthorizationV1(),
		AllowCacheTTL:             d.opts.CacheTTL,
		DenyCacheTTL:              d.opts.CacheTTL,
		WebhookRetryBackoff:       &backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("delegating authorizer: %w", err)
	}
	return authz, nil
}

func retryBackoff() wait.Backoff {
	return wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
}

// Authenticator returns the door's authenticator for a listener whose bearer tokens must be
// for one of audiences (empty: kube-apiserver's own). Listeners share the door's budgets and
// review slots; each remembers the tokens it accepted.
func (d *Door) Authenticator(audiences []string) (*Authenticator, error) {
	return d.authenticator(audiences, newKnownTokens(d.opts.CacheTTL, maxKnownTokens, false))
}

// PodTokenAuthenticator is Authenticator for a listener whose callers are pods holding
// projected tokens (the ingest path): a token that authenticated is remembered until it
// expires, not for the cache TTL, so each token costs kube-apiserver one TokenReview in its
// life however often its pod calls; up to maxTokens of them. What revokes such a token early
// is its pod's end, which the caller checks on every request (a pod-bound token dies with its
// pod; the runner's ServiceAccount goes with its task).
func (d *Door) PodTokenAuthenticator(audiences []string, maxTokens int) (*Authenticator, error) {
	return d.authenticator(audiences, newKnownTokens(d.opts.CacheTTL, maxTokens, true))
}

func (d *Door) authenticator(audiences []string, known *knownTokens) (*Authenticator, error) {
	backoff := retryBackoff()
	slice := func(f func() []string) headerrequest.StringSliceProvider {
		return headerrequest.StringSliceProviderFunc(f)
	}
	delegate, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                          nil, // no anonymous access
		TokenAccessReviewClient:            d.tokenReviews.AuthenticationV1(),
		TokenAccessReviewTimeout:           10 * time.Second,
		WebhookRetryBackoff:                &backoff,
		CacheTTL:                           d.opts.CacheTTL,
		ClientCertificateCAContentProvider: d.clientCA,
		// Without audiences, service-account tokens for the API server's own audience and OIDC
		// tokens the cluster trusts both pass; with them, only tokens for those audiences do
		// (kube-apiserver treats OIDC tokens as for its own audiences).
		APIAudiences: authenticator.Audiences(audiences),
		RequestHeaderConfig: &authenticatorfactory.RequestHeaderConfig{
			CAContentProvider:   d.requestHeaderCA,
			UsernameHeaders:     slice(d.requestHeader.UsernameHeaders),
			UIDHeaders:          slice(d.requestHeader.UIDHeaders),
			GroupHeaders:        slice(d.requestHeader.GroupHeaders),
			ExtraHeaderPrefixes: slice(d.requestHeader.ExtraHeaderPrefixes),
			AllowedClientNames:  slice(d.requestHeader.AllowedClientNames),
		},
	}.New()
	if err != nil {
		return nil, fmt.Errorf("delegating authenticator: %w", err)
	}
	return &Authenticator{door: d, delegate: delegate, audiences: authenticator.Audiences(audiences), known: known}, nil
}
