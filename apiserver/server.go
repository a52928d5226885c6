package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	toolscache "k8s.io/client-go/tools/cache"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Server is the HTTPS progress endpoint; it runs inside the manager on every replica (it needs
// no leader: it only reads).
type Server struct {
	cfg     CompletedConfig
	handler *handler
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// RejectedTokenCacheBytesMetric is the counted size of the endpoint's cache of refused tokens
// (bounded: a flood of junk tokens cannot grow it past a few MiB).
const RejectedTokenCacheBytesMetric = "workflowtask_progress_rejected_token_cache_bytes"

// New returns the server of a completed config, and exposes the size of its rejected-token
// cache as a metric on the manager's registry (the first server of a process, when several).
func (c CompletedConfig) New() *Server {
	_ = ctrlmetrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: RejectedTokenCacheBytesMetric,
		Help: "Counted bytes of the progress endpoint's cache of refused bearer tokens (hashes and reasons).",
	}, func() float64 { return float64(c.rejected.Bytes()) }))
	return &Server{cfg: c, handler: &handler{
		prefix:    c.Options.PathPrefix,
		authn:     c.authn,
		authz:     c.authz,
		tasks:     cacheTasks{reader: c.Reader},
		logins:    c.logins,
		known:     newKnownTokens(c.Options.AuthCacheTTL),
		audiences: authenticator.Audiences(c.Options.TokenAudiences),
		debug:     c.Options.Debug,
		log:       c.Log,
		changes:   newChangeHub(),
		streams:   newStreamLimiter(c.Options.MaxStreams, c.Options.MaxStreamsPerUser),
		heartbeat: c.Options.StreamHeartbeat,
		lifetime:  c.Options.StreamLifetime,
		reauth:    max(c.Options.AuthCacheTTL, time.Second),
		shutdown:  make(chan struct{}),
	}}
}

// SetupWithManager indexes tasks by ID and adds the endpoint to the manager, when enabled.
func SetupWithManager(ctx context.Context, mgr manager.Manager, opts *Options, configure ...func(*Config)) error {
	if err := SetupIndex(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if !opts.Enabled() {
		return nil
	}
	cfg := &Config{Options: opts, ReviewConfig: mgr.GetConfig(), Reader: mgr.GetCache(), Log: mgr.GetLogger().WithName("progress-endpoint")}
	for _, c := range configure {
		c(cfg)
	}
	completed, err := cfg.Complete()
	if err != nil {
		return fmt.Errorf("progress endpoint: %w", err)
	}
	srv := completed.New()
	// Event streams learn of task changes from the informer.
	informer, err := mgr.GetCache().GetInformer(ctx, &workflowv1alpha1.WorkflowTask{})
	if err != nil {
		return fmt.Errorf("progress endpoint: %w", err)
	}
	if _, err := informer.AddEventHandler(srv.TaskEvents()); err != nil {
		return fmt.Errorf("progress endpoint: %w", err)
	}
	return mgr.Add(srv)
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

// TaskEvents is the informer event handler through which event streams learn of task changes
// (SetupWithManager adds it to the manager's WorkflowTask informer).
func (s *Server) TaskEvents() toolscache.ResourceEventHandler {
	return s.handler.changes.eventHandler()
}

// Handler is the server's HTTP handler (for benchmarks and tests that serve it themselves).
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads the authentication ConfigMap's CAs and headers and keeps them current, then
// serves HTTPS until ctx ends, and shuts down gracefully.
func (s *Server) Start(ctx context.Context) error {
	for _, c := range s.cfg.controllers {
		if err := c.RunOnce(ctx); err != nil {
			// Not fatal: without the ConfigMap (or permission to read it) front-proxy and
			// client-certificate callers are not recognised, bearer tokens still are.
			s.cfg.Log.Error(err, "Loading the API server's authentication settings; retrying in the background")
		}
		go c.Run(ctx, 1)
	}
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Options.BindAddress); err != nil {
			return fmt.Errorf("progress endpoint: %w", err)
		}
	}
	ln = netutil.LimitListener(ln, s.cfg.Options.MaxConnections)
	srv := &http.Server{
		Handler:           withTimeout(s.handler, s.cfg.Options.RequestTimeout),
		TLSConfig:         s.cfg.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	srv.RegisterOnShutdown(s.handler.closeStreams)
	if !s.cfg.Options.EnableHTTP2 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	s.cfg.Log.Info("Serving the progress endpoint", "address", ln.Addr().String(), "pathPrefix", s.cfg.Options.PathPrefix)
	err := srv.Serve(tls.NewListener(ln, s.cfg.tls))
	if errors.Is(err, http.ErrServerClosed) {
		<-done // graceful shutdown finished
		return nil
	}
	return fmt.Errorf("progress endpoint: %w", err)
}
