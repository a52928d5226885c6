package apiserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/rest"
)

// rejectedTokenCacheSize bounds how many rejected TokenReviews are remembered (by hash).
const rejectedTokenCacheSize = 4096

// cacheRejectedTokenReviews makes cfg remember the API server's "not authenticated" answers to
// TokenReviews for ttl. k8s.io/apiserver's token cache keeps successes and clean failures, but a
// TokenReview that answers "invalid token" carries an error, and errors are not cached: without
// this, the same bad token would cost a TokenReview on every request. Only an answer the API
// server gave (201, authenticated false) is remembered; transport failures never are.
func cacheRejectedTokenReviews(cfg *rest.Config, ttl time.Duration) *rest.Config {
	if ttl <= 0 {
		return cfg
	}
	cfg = rest.CopyConfig(cfg)
	rejected := cache.NewLRUExpireCache(rejectedTokenCacheSize)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &rejectionCache{next: rt, rejected: rejected, ttl: ttl}
	})
	return cfg
}

type rejectionCache struct {
	next     http.RoundTripper
	rejected *cache.LRUExpireCache
	ttl      time.Duration
}

type cachedAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (c *rejectionCache) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/tokenreviews") || req.Body == nil {
		return c.next.RoundTrip(req)
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(body)
	if v, ok := c.rejected.Get(key); ok {
		a := v.(cachedAnswer)
		return &http.Response{StatusCode: a.status, Status: http.StatusText(a.status), Header: a.header.Clone(),
			Body: io.NopCloser(bytes.NewReader(a.body)), ContentLength: int64(len(a.body)), Request: req}, nil
	}
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	resp, err := c.next.RoundTrip(req)
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
		c.rejected.Add(key, cachedAnswer{status: resp.StatusCode, header: resp.Header.Clone(), body: answer}, c.ttl)
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	return resp, nil
}
