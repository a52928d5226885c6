package apiserver

import (
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
)

// The metrics port and the health probes: the binary's other listeners, behind the same door.

// metricsPath is where the metrics are served.
const metricsPath = "/metrics"

// newMetricsHandler serves gatherer's metrics to a caller the door authenticates (bearer token
// from the Authorization header only, the same budgets) and a SubjectAccessReview allows to
// "get" the path (non-resource URL /metrics: bind the metrics-reader ClusterRole), as
// controller-runtime's metrics filter does. authn nil: unauthenticated (loopback only, checked
// by Options.Validate).
//
// A scrape is costly (every metric gathered and encoded): each identity may scrape at most
// scrapesPerSecond, scrapeBurst at once; over that it waits the tarpit and gets 429.
func newMetricsHandler(authn *frontdoor.Authenticator, authz authorizer.Authorizer, gatherer prometheus.Gatherer) http.Handler {
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4})
	scrapes := frontdoor.NewBudget(scrapesPerSecond, scrapeBurst, maxScrapers)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != metricsPath || r.Method != http.MethodGet && r.Method != http.MethodHead {
			if authn != nil {
				authn.Refused(r)
			}
			if r.URL.Path != metricsPath {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if authn != nil {
			u, err := authn.Authenticate(w, r)
			switch {
			case errors.Is(err, frontdoor.ErrBusy), errors.Is(err, frontdoor.ErrLoginBudget), errors.Is(err, frontdoor.ErrIdentityBudget):
				w.Header().Set("Retry-After", "1")
				http.Error(w, "Too many requests", http.StatusTooManyRequests)
				return
			case err != nil:
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			decision, _, err := authz.Authorize(r.Context(), authorizer.AttributesRecord{User: u, Verb: strings.ToLower(r.Method), Path: r.URL.Path})
			switch {
			case errors.Is(err, frontdoor.ErrBusy):
				w.Header().Set("Retry-After", "1")
				http.Error(w, "Too many requests", http.StatusTooManyRequests)
				return
			case decision != authorizer.DecisionAllow:
				http.Error(w, "Forbidden", http.StatusForbidden)
				return
			}
			if !scrapes.Take(w, r, u.GetName()) {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "Too many requests", http.StatusTooManyRequests)
				return
			}
		}
		metrics.ServeHTTP(w, r)
	})
}

// Each identity's budget of scrapes (Prometheus scrapes every 15–60 s).
const (
	scrapesPerSecond = 1
	scrapeBurst      = 5
	maxScrapers      = 1000
)

// probeChecks are the checks of /healthz and /readyz.
type probeChecks struct {
	mu              sync.Mutex
	healthz, readyz map[string]healthz.Checker
}

func newProbeChecks() *probeChecks {
	return &probeChecks{healthz: map[string]healthz.Checker{}, readyz: map[string]healthz.Checker{}}
}

func (p *probeChecks) add(liveness bool, name string, check healthz.Checker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if liveness {
		p.healthz[name] = check
	} else {
		p.readyz[name] = check
	}
}

// handler serves /healthz and /readyz (and their per-check subpaths) with controller-runtime's
// handler, as the manager's own probe server does. Probes carry no credentials: every answer is
// charged to the client address's budget of unauthenticated answers (the kubelet probes a few
// times a minute; a flood is paced).
func (p *probeChecks) handler(door *frontdoor.Door) http.Handler {
	p.mu.Lock()
	defer p.mu.Unlock()
	mux := http.NewServeMux()
	for path, checks := range map[string]map[string]healthz.Checker{"/healthz": p.healthz, "/readyz": p.readyz} {
		h := http.StripPrefix(path, &healthz.Handler{Checks: checks})
		mux.Handle(path, h)
		mux.Handle(path+"/", h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		door.Refused(r)
		mux.ServeHTTP(w, r)
	})
}
