package apiserver

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// Server runs the binary's listeners behind its one front door: the HTTPS progress endpoint,
// the metrics port and the health probes. It runs inside the manager on every replica (it
// needs no leader: it only reads).
type Server struct {
	cfg     CompletedConfig
	handler *handler
	checks  *probeChecks
	// flusher writes pushed progress to the status (with Options.Ingest; the leader only).
	flusher *flusher
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// Metrics of the endpoint's own memory, exposed on the manager's registry.
const (
	// RejectedTokenCacheBytesMetric is the counted size of the cache of refused tokens
	// (bounded: a flood of junk tokens cannot grow it past a few MiB).
	RejectedTokenCacheBytesMetric = "workflowtask_progress_rejected_token_cache_bytes"
	// StreamWaitersMetric is the number of tasks event streams wait on (at most one per open
	// stream) and StreamsMetric the number of open streams.
	StreamWaitersMetric = "workflowtask_progress_stream_waiters"
	StreamsMetric       = "workflowtask_progress_streams"
)

var registerMetricsOnce sync.Once

// New returns the server of a completed config, and exposes its caches' sizes as metrics on the
// manager's registry (of the first server of a process, when several).
func (c CompletedConfig) New() *Server {
	var live *liveStore
	if c.Options.Ingest {
		live = newLiveStore(maxWritersPerTask, maxWritersPerPod)
	}
	// Correlation IDs from a pool of random bytes rather than a read of crypto/rand each.
	uuid.EnableRandPool()
	h := &handler{
		prefix:    c.Options.PathPrefix,
		authn:     c.authn,
		authz:     c.authz,
		tasks:     newTaskIndex(live),
		debug:     c.Options.Debug,
		log:       c.Log,
		changes:   newChangeHub(),
		streams:   newStreamLimiter(c.Options.MaxStreams, c.Options.MaxStreamsPerUser),
		heartbeat: c.Options.StreamHeartbeat,
		lifetime:  c.Options.StreamLifetime,
		reauth:    max(c.Options.AuthCacheTTL, time.Second),
		shutdown:  make(chan struct{}),
	}
	registerMetricsOnce.Do(func() {
		for _, g := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: RejectedTokenCacheBytesMetric,
				Help: "Counted bytes of the front door's cache of refused bearer tokens (hashes and reasons)."},
				func() float64 { return float64(c.door.RejectedTokenCacheBytes()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: StreamWaitersMetric,
				Help: "Tasks the progress endpoint's event streams wait on (at most one per open stream)."},
				func() float64 { return float64(h.changes.size()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: StreamsMetric,
				Help: "Event streams open on the progress endpoint."},
				func() float64 { return float64(h.streams.open()) }),
		} {
			_ = ctrlmetrics.Registry.Register(g)
		}
	})
	srv := &Server{cfg: c, handler: h, checks: newProbeChecks()}
	if live != nil {
		leading := &atomic.Bool{}
		srv.flusher = &flusher{live: live, tasks: h.tasks, client: c.Writer, interval: c.Options.FlushInterval,
			budget: c.Options.WriteBudget, workers: flushWorkers(c.Options.WriteBudget), leading: leading, log: c.Log.WithName("ingest")}
		h.ingest = &ingestHandler{authn: c.ingestAuthn, cached: c.PodReader, uncached: c.LiveReader, tasks: h.tasks, live: live, hub: h.changes,
			pushes: frontdoor.NewBudget(pushesPerSecond, pushBurst, maxPushers), refused: newExpiringSet(c.Options.AuthCacheTTL, maxPushers),
			leading: leading, debug: c.Options.Debug,
			pendingBody: ackBody(ingest.Ack{Pending: true, ResendAfterSeconds: int(math.Ceil(c.Options.FlushInterval.Seconds()))})}
	}
	return srv
}

// SetupWithManager adds the server to the manager: the progress endpoint when enabled (it
// learns of tasks from the manager's informer), the metrics port and the health probes when
// theirs are. The manager's own metrics and probe servers are to be off (their ports are
// served here).
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts *Options, configure ...func(*Config)) (*Server, error) {
	cfg := &Config{Options: opts, ReviewConfig: mgr.GetConfig(), Writer: mgr.GetClient(), PodReader: mgr.GetClient(),
		LiveReader: mgr.GetAPIReader(),
		Log:        mgr.GetLogger().WithName("progress-endpoint")}
	for _, c := range configure {
		c(cfg)
	}
	completed, err := cfg.Complete()
	if err != nil {
		return nil, fmt.Errorf("progress endpoint: %w", err)
	}
	srv := completed.New()
	if opts.Enabled() {
		// The endpoint's index and its event streams learn of tasks from the informer.
		informer, err := mgr.GetCache().GetInformer(ctx, &workflowv1alpha1.WorkflowTask{})
		if err != nil {
			return nil, fmt.Errorf("progress endpoint: %w", err)
		}
		if _, err := informer.AddEventHandler(srv.TaskEvents()); err != nil {
			return nil, fmt.Errorf("progress endpoint: %w", err)
		}
	}
	if err := mgr.Add(srv); err != nil {
		return nil, fmt.Errorf("progress endpoint: %w", err)
	}
	if srv.flusher != nil {
		// Pushes are checked against task pods in the cache: start watching them now rather
		// than at the first push.
		if _, err := mgr.GetCache().GetInformer(ctx, &corev1.Pod{}); err != nil {
			return nil, fmt.Errorf("progress ingest: %w", err)
		}
		if err := mgr.Add(srv.flusher); err != nil {
			return nil, fmt.Errorf("progress ingest: %w", err)
		}
		if err := addLeaderLabel(mgr, cfg.Log.WithName("ingest-leader-label")); err != nil {
			return nil, fmt.Errorf("progress ingest: %w", err)
		}
	}
	return srv, nil
}

// withTimeout gives every request a deadline: reviews and waits for a review slot end with it.
// An event stream has its own limits (lifetime, heartbeat writes).
func withTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsStream(r) {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// TaskEvents is the informer event handler through which the endpoint learns of tasks and
// their changes (SetupWithManager adds it to the manager's WorkflowTask informer).
func (s *Server) TaskEvents() toolscache.ResourceEventHandler {
	return eventHandler(s.handler.tasks, s.handler.changes)
}

// Handler is the progress endpoint's HTTP handler (for benchmarks and tests that serve it
// themselves).
func (s *Server) Handler() http.Handler { return withTimeout(s.handler, s.cfg.Options.RequestTimeout) }

// AddHealthzCheck adds a check to the probes' /healthz (before Start).
func (s *Server) AddHealthzCheck(name string, check healthz.Checker) { s.checks.add(true, name, check) }

// AddReadyzCheck adds a check to the probes' /readyz (before Start).
func (s *Server) AddReadyzCheck(name string, check healthz.Checker) { s.checks.add(false, name, check) }

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads the front door's CAs and keys and keeps them current, then serves every enabled
// listener until ctx ends, and shuts them down gracefully. A listener that fails ends them all.
func (s *Server) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.cfg.door.Start(ctx)
	for _, r := range s.cfg.reloaders {
		if err := r.RunOnce(ctx); err != nil {
			return fmt.Errorf("progress endpoint: serving certificate: %w", err)
		}
		go r.Run(ctx, 1)
	}
	listeners, err := s.listeners()
	if err != nil {
		return err
	}
	if len(listeners) == 0 {
		<-ctx.Done()
		return nil
	}
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errs <- frontdoor.Serve(ctx, s.cfg.Log, s.cfg.Options.Timeouts, l) }()
	}
	var first error
	for range listeners {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// listeners are the enabled listeners, bound.
func (s *Server) listeners() ([]frontdoor.Listener, error) {
	o := s.cfg.Options
	limits := frontdoor.ConnLimits{Total: o.MaxConnections, PerAddress: o.MaxConnectionsPerAddress}
	var out []frontdoor.Listener
	var bound []net.Listener
	bind := func(given net.Listener, addr string) (net.Listener, error) {
		if given != nil {
			return given, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, b := range bound {
				_ = b.Close()
			}
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		bound = append(bound, ln)
		return ln, nil
	}
	if o.Enabled() {
		ln, err := bind(s.cfg.Listener, o.BindAddress)
		if err != nil {
			return nil, fmt.Errorf("progress endpoint: %w", err)
		}
		out = append(out, frontdoor.Listener{Name: "progress", Listener: ln, TLS: s.cfg.tls, Limits: limits,
			Handler: s.Handler(), OnShutdown: s.handler.closeStreams})
	}
	if enabled(o.MetricsBindAddress) {
		ln, err := bind(s.cfg.MetricsListener, o.MetricsBindAddress)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		l := frontdoor.Listener{Name: "metrics", Listener: ln, Limits: limits,
			Handler: withTimeout(newMetricsHandler(s.cfg.metricsAuthn, s.cfg.authz, ctrlmetrics.Registry), o.RequestTimeout)}
		if o.MetricsSecure {
			l.TLS = s.cfg.tls
		} else {
			l.Handler = newMetricsHandler(nil, nil, ctrlmetrics.Registry)
		}
		out = append(out, l)
	}
	if enabled(o.HealthProbeBindAddress) {
		ln, err := bind(s.cfg.ProbesListener, o.HealthProbeBindAddress)
		if err != nil {
			return nil, fmt.Errorf("health probes: %w", err)
		}
		out = append(out, frontdoor.Listener{Name: "probes", Listener: ln, Limits: limits, Handler: s.checks.handler(s.cfg.door)})
	}
	return out, nil
}
