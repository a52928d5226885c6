package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Server is the HTTPS progress endpoint; it runs inside the manager on every replica (it needs
// no leader: it only reads).
type Server struct {
	cfg     CompletedConfig
	handler http.Handler
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// New returns the server of a completed config.
func (c CompletedConfig) New() *Server {
	return &Server{cfg: c, handler: &handler{
		prefix:  c.Options.PathPrefix,
		authn:   c.authn,
		authz:   c.authz,
		tasks:   cacheTasks{reader: c.Reader},
		reviews: make(reviewLimiter, c.Options.MaxConcurrentReviews),
		debug:   c.Options.Debug,
		log:     c.Log,
	}}
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
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.cfg.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
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
