package apiserver

import (
	"errors"
	"hash/maphash"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/lru"
)

var (
	// errBusy: no review slot was free within the wait; the caller gets 429.
	errBusy = errors.New("too many reviews in flight")
	// errLoginBudget: the caller's client is over its budget of failed logins and may send no
	// new TokenReview; the caller gets 429.
	errLoginBudget = errors.New("too many failed logins from this client")
)

// reviewGate bounds the TokenReviews and SubjectAccessReviews in flight. It sits on the review
// clients' transport, so only a request that really sends a review takes a slot: cached
// identities, front-proxy and client-certificate callers never wait for one. A request waits at
// most maxWait for a slot, then errBusy: 429.
type reviewGate struct {
	slots   chan struct{}
	maxWait time.Duration
}

func newReviewGate(slots int, maxWait time.Duration) *reviewGate {
	return &reviewGate{slots: make(chan struct{}, slots), maxWait: maxWait}
}

// wrap returns cfg with the gate on its transport.
func (g *reviewGate) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			t := time.NewTimer(g.maxWait)
			defer t.Stop()
			select {
			case g.slots <- struct{}{}:
			case <-t.C:
				return nil, errBusy
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
			defer func() { <-g.slots }()
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

// knownTokens remembers, by a keyed hash, the bearer tokens that authenticated within ttl: the
// ones k8s.io/apiserver's token cache answers without a review. A client over its failed-login
// budget may still use those. (The token cache shares lookups on a context of its own, so the
// request's client cannot be told to it.) Bounded: an LRU of maxKnownTokens hashes.
type knownTokens struct {
	seed maphash.Seed
	ttl  time.Duration
	mu   sync.Mutex
	lru  *lru.Cache
}

const maxKnownTokens = 10000

func newKnownTokens(ttl time.Duration) *knownTokens {
	return &knownTokens{seed: maphash.MakeSeed(), ttl: ttl, lru: lru.New(maxKnownTokens)}
}

func (k *knownTokens) add(token string, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lru.Add(maphash.String(k.seed, token), now.Add(k.ttl))
}

func (k *knownTokens) has(token string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.lru.Get(maphash.String(k.seed, token))
	return ok && now.Before(v.(time.Time))
}

// loginLimiter gives every client address a budget of failed logins: a token bucket of burst
// failures, refilled at perSecond. A client over it may send no new token (one that
// authenticated within the cache TTL still works: knownTokens) until its bucket refills, so one
// client's junk tokens cost the API server at most perSecond reviews and never use up the slots
// others need. Clients are held in an LRU of bounded size; IPv6 clients count by their /64.
type loginLimiter struct {
	perSecond float64
	burst     float64
	mu        sync.Mutex
	clients   *lru.Cache // client → *bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLoginLimiter(perSecond float64, burst, maxClients int) *loginLimiter {
	return &loginLimiter{perSecond: perSecond, burst: float64(burst), clients: lru.New(maxClients)}
}

// bucketOf returns client's bucket refilled up to now. Called with mu held.
func (l *loginLimiter) bucketOf(client string, now time.Time) *bucket {
	v, ok := l.clients.Get(client)
	if !ok {
		b := &bucket{tokens: l.burst, at: now}
		l.clients.Add(client, b)
		return b
	}
	b := v.(*bucket)
	if now.After(b.at) {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.perSecond)
		b.at = now
	}
	return b
}

// reserve takes one failed login from client's budget before a new token is reviewed (so that
// concurrent requests cannot all pass a check made before any of them failed), or reports that
// the client is over budget. A review that succeeds gives it back (refund).
func (l *loginLimiter) reserve(client string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketOf(client, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund gives back a reserved failed login: the token authenticated, or was not reviewed.
func (l *loginLimiter) refund(client string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketOf(client, now)
	b.tokens = min(l.burst, b.tokens+1)
}

// clientKey is the address a request came from: its IP, or an IPv6 address's /64.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}
