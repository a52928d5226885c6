package frontdoor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Listener is one port of the binary behind the door.
type Listener struct {
	// Name names the listener in metrics and logs ("progress", "metrics", "probes").
	Name string
	// Listener is the bound socket; the door takes it over.
	Listener net.Listener
	// TLS serves HTTPS when set (HTTP/1.1 unless it offers h2); nil: plain HTTP (probes).
	TLS *tls.Config
	// Handler answers requests. Every answer closes its connection unless the handler
	// authenticated the request through an Authenticator of the door.
	Handler http.Handler
	// Limits bound the listener's connections.
	Limits ConnLimits
	// OnShutdown runs when the server starts shutting down (e.g. ending event streams).
	OnShutdown func()
}

// Timeouts of every listener.
type Timeouts struct {
	// Header bounds the TLS handshake and the reading of a request's headers: what a client
	// that has not authenticated may hold a connection for.
	Header time.Duration
	// Read and Write bound one request's body and answer (event streams lift them).
	Read, Write time.Duration
	// Idle bounds the wait for the next request on a kept-alive connection.
	Idle time.Duration
}

// DefaultTimeouts are short for unauthenticated clients and generous for answers.
func DefaultTimeouts() Timeouts {
	return Timeouts{Header: 5 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 60 * time.Second}
}

// connectionClose is the Connection header of an answer to a request that did not
// authenticate (shared: net/http never changes it).
var connectionClose = []string{"close"}

// MaxHeaderBytes bounds a request's headers on every listener.
const MaxHeaderBytes = 64 << 10

// Serve serves l until ctx ends, then shuts down gracefully. The connection table bounds
// connections per address and in total without blocking accepts; the TLS handshake and the
// headers must arrive within the header timeout; answers to requests that did not authenticate
// close their connection (keep-alive is for authenticated clients).
func Serve(ctx context.Context, log logr.Logger, timeouts Timeouts, l Listener) error {
	table := newConnTable(l.Limits)
	unregister := registerConnMetrics(l.Name, table)
	defer unregister()
	metrics := newRequestMetrics(l.Name)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header()["Connection"] = connectionClose // until an Authenticator says otherwise
		sw := &statusWriter{ResponseWriter: w}
		l.Handler.ServeHTTP(sw, r)
		metrics.observe(sw.status(), w.Header().Get("Content-Type"), time.Since(start))
	})
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         l.TLS,
		ReadHeaderTimeout: timeouts.Header, // also the TLS handshake's (net/http takes the least)
		ReadTimeout:       timeouts.Read,
		WriteTimeout:      timeouts.Write,
		IdleTimeout:       timeouts.Idle,
		MaxHeaderBytes:    MaxHeaderBytes,
		ConnContext:       connContext,
		ConnState:         connState,
		// TLS handshake failures and the like, one line per connection: debug level only.
		ErrorLog: stdlog.New(logWriter{log.V(2)}, "", 0),
	}
	if l.OnShutdown != nil {
		srv.RegisterOnShutdown(l.OnShutdown)
	}
	var ln net.Listener = &limitedListener{Listener: l.Listener, table: table}
	if l.TLS != nil {
		if !offersH2(l.TLS) {
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		}
		ln = tls.NewListener(ln, l.TLS)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Info("Serving", "listener", l.Name, "address", l.Listener.Addr().String(), "tls", l.TLS != nil)
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return fmt.Errorf("%s listener: %w", l.Name, err)
}

func offersH2(c *tls.Config) bool {
	for _, p := range c.NextProtos {
		if p == "h2" {
			return true
		}
	}
	return false
}

// Connection metrics, by listener.
const (
	ConnectionsMetric        = "workflowtask_door_connections"
	ConnectionsEvictedMetric = "workflowtask_door_connections_evicted_total"
	ConnectionsRefusedMetric = "workflowtask_door_connections_refused_total"
)

var (
	connDescs = struct{ open, evicted, refused *prometheus.Desc }{
		open: prometheus.NewDesc(ConnectionsMetric, "Connections open, by listener.", []string{"listener"}, nil),
		evicted: prometheus.NewDesc(ConnectionsEvictedMetric,
			"Connections closed to make room for a new one (never authenticated, or idle), by listener.", []string{"listener"}, nil),
		refused: prometheus.NewDesc(ConnectionsRefusedMetric,
			"New connections closed at once: no room and no connection to close for them, by listener.", []string{"listener"}, nil),
	}
	liveTables   sync.Map // listener name → *connTable
	registerOnce sync.Once
)

// registerConnMetrics exposes table's counts under name on the manager's registry while it
// serves.
func registerConnMetrics(name string, table *connTable) (unregister func()) {
	registerOnce.Do(func() { _ = ctrlmetrics.Registry.Register(connCollector{}) })
	liveTables.Store(name, table)
	return func() { liveTables.CompareAndDelete(name, table) }
}

type connCollector struct{}

func (connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connDescs.open
	ch <- connDescs.evicted
	ch <- connDescs.refused
}

func (connCollector) Collect(ch chan<- prometheus.Metric) {
	liveTables.Range(func(k, v any) bool {
		name, table := k.(string), v.(*connTable)
		for _, m := range []struct {
			desc *prometheus.Desc
			kind prometheus.ValueType
			v    float64
		}{
			{connDescs.open, prometheus.GaugeValue, float64(table.open())},
			{connDescs.evicted, prometheus.CounterValue, float64(table.evicted.Load())},
			{connDescs.refused, prometheus.CounterValue, float64(table.refused.Load())},
		} {
			if metric, err := prometheus.NewConstMetric(m.desc, m.kind, m.v, name); err == nil {
				ch <- metric
			}
		}
		return true
	})
}

// logWriter hands net/http's error log lines to a logr logger.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	if w.log.Enabled() {
		w.log.Info(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
