package frontdoor

import (
	"hash/maphash"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/utils/lru"
)

// budget gives every key (a client address, an identity) a token bucket: burst at once,
// refilled at perSecond. Keys are held in an LRU of bounded size, so a flood of keys forgets
// the least recently seen ones instead of growing.
type budget struct {
	perSecond float64
	burst     float64
	mu        sync.Mutex
	buckets   *lru.Cache // key → *bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newBudget(perSecond float64, burst, maxKeys int) *budget {
	return &budget{perSecond: perSecond, burst: float64(burst), buckets: lru.New(maxKeys)}
}

// bucketOf returns key's bucket refilled up to now. Called with mu held.
func (b *budget) bucketOf(key string, now time.Time) *bucket {
	v, ok := b.buckets.Get(key)
	if !ok {
		bk := &bucket{tokens: b.burst, at: now}
		b.buckets.Add(key, bk)
		return bk
	}
	bk := v.(*bucket)
	if now.After(bk.at) {
		bk.tokens = min(b.burst, bk.tokens+now.Sub(bk.at).Seconds()*b.perSecond)
		bk.at = now
	}
	return bk
}

// reserve takes one from key's budget before the work it pays for (so that concurrent
// requests cannot all pass a check made before any of them finished), or reports that key is
// over budget.
func (b *budget) reserve(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.bucketOf(key, now)
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

// refund gives back what reserve took (the work was not done, or was not to be paid for).
func (b *budget) refund(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.bucketOf(key, now)
	bk.tokens = min(b.burst, bk.tokens+1)
}

// Budget is a per-key budget for a listener's own use (e.g. scrapes per identity).
type Budget struct {
	b      *budget
	tarpit time.Duration
}

// NewBudget gives every key burst at once, refilled at perSecond; at most maxKeys are held.
func NewBudget(perSecond float64, burst, maxKeys int) *Budget {
	return &Budget{b: newBudget(perSecond, burst, maxKeys), tarpit: time.Second}
}

// Take takes one from key's budget for r, a request the door authenticated. Over it, r's
// connection loses the trust its authentication gave it (a newcomer may take its place, and it
// is closed after the answer), r waits a tarpit (or until it ends), and Take reports false: a
// caller over its own budget holds its connections no more than a refused one does, however
// many it keeps busy with requests past the budget.
func (b *Budget) Take(w http.ResponseWriter, r *http.Request, key string) bool {
	if b.b.reserve(key, time.Now()) {
		return true
	}
	distrust(w, r)
	tarpit(r.Context(), b.tarpit)
	return false
}

// knownTokens remembers, by a keyed hash, the bearer tokens that authenticated within ttl and
// whom they identified: such a token is served without a review and without any budget (what
// k8s.io/apiserver's token cache would answer, for a fraction of its cost). Bounded: an LRU of
// maxKnownTokens entries, each expiring after ttl and never after the token itself.
type knownTokens struct {
	seed maphash.Seed
	ttl  time.Duration
	// untilExpiry remembers a token with a known expiry until then, not only for ttl.
	untilExpiry bool
	mu          sync.Mutex
	lru         *lru.Cache
}

type knownToken struct {
	user    user.Info
	expires time.Time
}

const maxKnownTokens = 10000

func newKnownTokens(ttl time.Duration, size int, untilExpiry bool) *knownTokens {
	return &knownTokens{seed: maphash.MakeSeed(), ttl: ttl, untilExpiry: untilExpiry, lru: lru.New(size)}
}

// add remembers token for u until the cache TTL ends, or the token's own expiry if earlier
// (zero: unknown) — or, untilExpiry, until the token's own expiry when it has one.
func (k *knownTokens) add(token string, u user.Info, now, tokenExpiry time.Time) {
	if k.ttl <= 0 {
		return
	}
	expires := now.Add(k.ttl)
	if !tokenExpiry.IsZero() && (k.untilExpiry || tokenExpiry.Before(expires)) {
		expires = tokenExpiry
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lru.Add(maphash.String(k.seed, token), knownToken{user: u, expires: expires})
}

// get returns whom token identified, when it authenticated within the TTL.
func (k *knownTokens) get(token string, now time.Time) (user.Info, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.lru.Get(maphash.String(k.seed, token))
	if !ok {
		return nil, false
	}
	if e := v.(knownToken); now.Before(e.expires) {
		return e.user, true
	}
	return nil, false
}

// clients finds the client address a request's budget is charged to.
type clients struct {
	// proxies are the addresses whose X-Forwarded-For names the client (ingress controllers,
	// proxies that front many users); empty: nobody's.
	proxies []netip.Prefix
}

// ParseTrustedProxies parses a list of CIDRs (or single addresses).
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c clients) trusted(a netip.Addr) bool {
	for _, p := range c.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// key is the address a request is charged to: its peer's, or — when the peer is a trusted
// proxy — the last address in X-Forwarded-For that is not a trusted proxy; an IPv6 address
// counts by its /64.
func (c clients) key(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return host
	}
	addr := peer.Addr().Unmap()
	if len(c.proxies) > 0 && c.trusted(addr) {
		addr = c.forwardedFor(r, addr)
	}
	if addr.Is6() {
		return maskAddr(addr).String() + "/64"
	}
	return addr.String()
}

// forwardedFor walks X-Forwarded-For from the right (the entries trusted proxies appended) to
// the first address that is not a trusted proxy; peer when there is none or one is malformed.
func (c clients) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		hops := strings.Split(values[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return peer
			}
			if a = a.Unmap(); !c.trusted(a) {
				return a
			}
		}
	}
	return peer
}
