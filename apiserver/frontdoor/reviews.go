package frontdoor

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// reviewGate bounds the TokenReviews and SubjectAccessReviews in flight. It sits on the review
// clients' transport, so only a request that really sends a review takes a slot: cached
// identities, front-proxy and client-certificate callers never wait for one. A request waits at
// most maxWait for a slot, then ErrBusy: 429.
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
				return nil, ErrBusy
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
			defer func() { <-g.slots }()
			reviewsTotal.WithLabelValues(reviewKind(req.URL.Path)).Inc()
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

// ReviewsMetric counts the reviews the door sent to kube-apiserver, by kind.
const ReviewsMetric = "workflowtask_door_reviews_total"

var reviewsTotal = func() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: ReviewsMetric,
		Help: "TokenReviews and SubjectAccessReviews the operator's listeners sent to kube-apiserver."}, []string{"kind"})
	_ = ctrlmetrics.Registry.Register(c)
	return c
}()

func reviewKind(path string) string {
	switch {
	case strings.HasSuffix(path, "/tokenreviews"):
		return "token"
	case strings.HasSuffix(path, "/subjectaccessreviews"):
		return "access"
	}
	return "other"
}
