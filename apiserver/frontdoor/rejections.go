package frontdoor

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Bounds of the rejected-token cache. An entry is a token's hash and the API server's reason,
// cut to maxRejectionReason bytes: never the token, never the whole TokenReview (which echoes
// the token), so a flood of large junk tokens cannot grow the manager's memory.
const (
	rejectedTokenCacheSize = 4096
	maxRejectionReason     = 256
	// rejectionOverhead is what an entry costs besides its reason: the key, the list element,
	// the map slot, the expiry (an estimate on the high side).
	rejectionOverhead = 160
	// MaxRejectedTokenCacheBytes bounds the cache's counted size (about 1.6 MiB).
	MaxRejectedTokenCacheBytes = rejectedTokenCacheSize * (rejectionOverhead + maxRejectionReason)
)

// cacheRejectedTokenReviews makes cfg remember the API server's "not authenticated" answers to
// TokenReviews for ttl. k8s.io/apiserver's token cache keeps successes and clean failures, but a
// TokenReview that answers "invalid token" carries an error, and errors are not cached: without
// this, the same bad token would cost a TokenReview on every request. Only an answer the API
// server gave (201, authenticated false) is remembered; transport failures and other answers
// never are.
func cacheRejectedTokenReviews(cfg *rest.Config, rejected *rejectionCache) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) { return rejected.roundTrip(rt, req) })
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rejectionCache is an LRU of rejected tokens by hash, bounded in entries and in counted bytes,
// each entry expiring after ttl.
type rejectionCache struct {
	ttl   time.Duration
	clock clock.PassiveClock

	mu      sync.Mutex
	entries map[[sha256.Size]byte]*list.Element
	order   *list.List // front: most recently used
	bytes   int
}

type rejection struct {
	key     [sha256.Size]byte
	reason  string
	expires time.Time
}

func (e *rejection) size() int { return rejectionOverhead + len(e.reason) }

func newRejectionCache(ttl time.Duration, clk clock.PassiveClock) *rejectionCache {
	return &rejectionCache{ttl: ttl, clock: clk, entries: map[[sha256.Size]byte]*list.Element{}, order: list.New()}
}

// Bytes is the cache's counted size: at most MaxRejectedTokenCacheBytes.
func (c *rejectionCache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Len is the number of entries: at most rejectedTokenCacheSize.
func (c *rejectionCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *rejectionCache) get(key [sha256.Size]byte) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return "", false
	}
	e := el.Value.(*rejection)
	if !c.clock.Now().Before(e.expires) {
		c.remove(el)
		return "", false
	}
	c.order.MoveToFront(el)
	return e.reason, true
}

func (c *rejectionCache) add(key [sha256.Size]byte, reason string) {
	if len(reason) > maxRejectionReason {
		reason = reason[:maxRejectionReason]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	e := &rejection{key: key, reason: reason, expires: c.clock.Now().Add(c.ttl)}
	c.entries[key] = c.order.PushFront(e)
	c.bytes += e.size()
	for c.order.Len() > rejectedTokenCacheSize || c.bytes > MaxRejectedTokenCacheBytes {
		c.remove(c.order.Back())
	}
}

func (c *rejectionCache) remove(el *list.Element) {
	e := c.order.Remove(el).(*rejection)
	delete(c.entries, e.key)
	c.bytes -= e.size()
}

// roundTrip answers a TokenReview for a token rejected within ttl from the cache, and remembers
// new rejections (by the token and the audiences it was reviewed for: see refused).
func (c *rejectionCache) roundTrip(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/tokenreviews") || req.Body == nil {
		return next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	key := reviewKey(body)
	if reason, ok := c.get(key); ok {
		return rejectedAnswer(req, reason)
	}
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	resp, err := next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		return resp, err
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var review authenticationv1.TokenReview
	if json.Unmarshal(answer, &review) == nil && !review.Status.Authenticated {
		c.add(key, review.Status.Error)
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	return resp, nil
}

// tokenKey is a refused token's key in the cache: the token and the audiences it was reviewed
// for (so that a token refused for one listener's audiences is not refused for another's).
func tokenKey(audiences []string, token string) [sha256.Size]byte {
	h := sha256.New()
	for _, a := range audiences {
		h.Write([]byte(a))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	h.Write([]byte(token))
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// reviewKey is the cache's key of a TokenReview request: its token's (tokenKey), or the body's
// hash when it cannot be read as one.
func reviewKey(body []byte) [sha256.Size]byte {
	var review authenticationv1.TokenReview
	if json.Unmarshal(body, &review) != nil || review.Spec.Token == "" {
		return sha256.Sum256(body)
	}
	return tokenKey(review.Spec.Audiences, review.Spec.Token)
}

// refused reports whether kube-apiserver refused token, reviewed for audiences, within the TTL.
func (c *rejectionCache) refused(audiences []string, token string) bool {
	_, ok := c.get(tokenKey(audiences, token))
	return ok
}

// rejectedAnswer is the API server's answer for a rejected token, rebuilt from the cache: a
// TokenReview with authenticated false and the reason, nothing of the token.
func rejectedAnswer(req *http.Request, reason string) (*http.Response, error) {
	body, err := json.Marshal(authenticationv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: authenticationv1.SchemeGroupVersion.String(), Kind: "TokenReview"},
		Status:   authenticationv1.TokenReviewStatus{Authenticated: false, Error: reason},
	})
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: http.StatusCreated, Status: "201 Created", Request: req,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body))}, nil
}
