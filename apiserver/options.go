// Package apiserver serves a task's progress over HTTPS, in the shape of Cloudreve v4's
// GET /workflow/progress/{id}: directly with a bearer JWT, and through the Kubernetes
// aggregation layer (APIService v1alpha1.progress.taskops.dev); and it serves the binary's other
// listeners, the metrics port and the health probes. Every listener sits behind one front door
// (package frontdoor): the same connection rules, credential rules and budgets. Callers are
// authenticated and authorized by k8s.io/apiserver's delegating authenticator and authorizer
// (TokenReview, front-proxy certificates, SubjectAccessReview) behind the door's checks; tasks
// are read from the manager's informer cache. Options → Config → Complete → Server, like
// metrics-server.
package apiserver

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
)

// TokenAudience is the audience every shipped configuration accepts bearer tokens for
// (--progress-token-audiences): clients get tokens with kubectl create token NAME
// --audience=progress.taskops.dev, which kube-apiserver refuses if they are replayed against it.
const TokenAudience = "progress.taskops.dev"

// Options are the endpoint's command-line options.
type Options struct {
	// BindAddress is where it listens (HTTPS only); empty or "0" turns it off.
	BindAddress string
	// TLSCertFile and TLSKeyFile are a serving certificate (e.g. a mounted Secret), reloaded
	// when they change. Without them a self-signed certificate for DNSNames is made at start.
	TLSCertFile, TLSKeyFile string
	// DNSNames are the names of the endpoint's Services (the progress Service and the ingest
	// Service), for the self-signed or operator-managed serving certificate.
	DNSNames []string
	// PathPrefix also serves the endpoint under this prefix ("/api/v4": a drop-in for a
	// Cloudreve front end).
	PathPrefix string
	// Debug adds the raw error text to internal-error answers.
	Debug bool
	// TokenAudiences, when set, are the only audiences a bearer token may be for (TokenReview
	// audiences): give clients tokens for a dedicated audience (kubectl create token NAME
	// --audience=progress.taskops.dev), useless against kube-apiserver. Empty: the API server's
	// own audiences.
	TokenAudiences []string
	// AuthCacheTTL is how long TokenReview and SubjectAccessReview results are cached.
	AuthCacheTTL time.Duration
	// MaxConcurrentReviews bounds TokenReviews and SubjectAccessReviews in flight.
	MaxConcurrentReviews int
	// ReviewWait is how long a request may wait for a review slot before it is answered 429.
	ReviewWait time.Duration
	// FailedLoginsPerSecond and FailedLoginBurst are each client address's budget of failed
	// logins (tokens that could not be checked here and that the API server refused); over it,
	// a client may send no such new token until the budget refills (429), while tokens already
	// reviewed, and tokens whose signature the endpoint verified, keep working.
	FailedLoginsPerSecond float64
	FailedLoginBurst      int
	// NewTokensPerSecond and NewTokenBurst are each identity's budget of new tokens reviewed
	// (a user minting tokens in a loop gets 429 after the burst).
	NewTokensPerSecond float64
	NewTokenBurst      int
	// UnverifiableReviewsPerSecond bounds the reviews of new tokens the endpoint cannot check
	// itself (OIDC, legacy), across all clients.
	UnverifiableReviewsPerSecond float64
	// TrustedProxies are CIDRs of proxies (an ingress controller) whose X-Forwarded-For names
	// the client that budgets are charged to; empty: none is trusted.
	TrustedProxies []string
	// MaxConnections bounds each listener's connections, and MaxConnectionsPerAddress those
	// from one client address (IPv6: its /64). A new connection over a bound replaces the
	// oldest one that never authenticated (or an idle one); accepting never waits.
	MaxConnections, MaxConnectionsPerAddress int
	// Timeouts bound the TLS handshake and headers (Header: short, before any
	// authentication), an answer (Read, Write) and a kept-alive connection's wait (Idle).
	Timeouts frontdoor.Timeouts
	// RequestTimeout bounds the handling of one request.
	RequestTimeout time.Duration
	// EnableHTTP2 allows HTTP/2 (off by default: HTTP/2 Rapid Reset, CVE-2023-44487).
	EnableHTTP2 bool
	// MaxStreams and MaxStreamsPerUser bound the open event streams (Accept: text/event-stream),
	// in total and per user; beyond them a new stream is answered 429.
	MaxStreams, MaxStreamsPerUser int
	// StreamHeartbeat is how often a stream sends a comment when nothing changes.
	StreamHeartbeat time.Duration
	// StreamLifetime ends a stream after this long (the client reconnects, authenticating anew).
	StreamLifetime time.Duration

	// Ingest takes progress pushed by tasks' pods (PUT /ingest/v1alpha1/…, a projected token
	// for ingest.progress.taskops.dev) and writes it to the status: each task at most every
	// FlushInterval, all tasks together at most WriteBudget writes a second.
	Ingest        bool
	FlushInterval time.Duration
	WriteBudget   float64

	// MetricsBindAddress is where the manager's Prometheus metrics are served ("0": not
	// served): HTTPS behind the same door, authorized by a SubjectAccessReview of GET on the
	// path; MetricsSecure false serves plain HTTP without authentication, on loopback only.
	MetricsBindAddress string
	MetricsSecure      bool
	// HealthProbeBindAddress is where /healthz and /readyz are served (plain HTTP for the
	// kubelet, no credentials; "0": not served).
	HealthProbeBindAddress string
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	door := frontdoor.DefaultOptions()
	return &Options{
		BindAddress: ":9443",
		DNSNames: []string{"workflowtask-progress.workflowtask-system.svc",
			"workflowtask-progress.workflowtask-system.svc.cluster.local",
			IngestServiceName + ".workflowtask-system.svc", IngestServiceName + ".workflowtask-system.svc.cluster.local"},
		PathPrefix:                   "/api/v4",
		AuthCacheTTL:                 10 * time.Second,
		MaxConcurrentReviews:         16,
		ReviewWait:                   time.Second,
		FailedLoginsPerSecond:        door.FailedLoginsPerSecond,
		FailedLoginBurst:             door.FailedLoginBurst,
		NewTokensPerSecond:           door.NewTokensPerSecond,
		NewTokenBurst:                door.NewTokenBurst,
		UnverifiableReviewsPerSecond: door.UnverifiableReviewsPerSecond,
		MaxConnections:               2048,
		MaxConnectionsPerAddress:     512,
		Timeouts:                     frontdoor.DefaultTimeouts(),
		RequestTimeout:               15 * time.Second,
		MaxStreams:                   1024,
		MaxStreamsPerUser:            16,
		StreamHeartbeat:              15 * time.Second,
		StreamLifetime:               30 * time.Minute,
		FlushInterval:                10 * time.Second,
		WriteBudget:                  50,
		MetricsBindAddress:           ":8443",
		MetricsSecure:                true,
		HealthProbeBindAddress:       ":8081",
	}
}

// AddFlags adds the options to fs, prefixed "progress-".
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "progress-bind-address", o.BindAddress, "Address of the HTTPS progress endpoint; \"0\" turns it off.")
	fs.StringVar(&o.TLSCertFile, "progress-tls-cert-file", o.TLSCertFile, "Serving certificate (PEM), e.g. from a mounted Secret; self-signed when empty.")
	fs.StringVar(&o.TLSKeyFile, "progress-tls-private-key-file", o.TLSKeyFile, "Serving certificate's key (PEM).")
	fs.Func("progress-dns-names", "Comma-separated DNS names of the endpoint's Service, for the self-signed certificate (default "+strings.Join(o.DNSNames, ",")+").",
		func(s string) error { o.DNSNames = strings.Split(s, ","); return nil })
	fs.StringVar(&o.PathPrefix, "progress-path-prefix", o.PathPrefix, "Also serve /workflow/progress/{id} under this prefix.")
	fs.BoolVar(&o.Debug, "progress-debug", o.Debug, "Show the raw error text in internal-error answers.")
	fs.Func("progress-token-audiences", "Audience a bearer token must be for (repeatable or comma-separated), e.g. progress.taskops.dev; default: the API server's own.",
		func(s string) error {
			for _, a := range strings.Split(s, ",") {
				if a = strings.TrimSpace(a); a != "" {
					o.TokenAudiences = append(o.TokenAudiences, a)
				}
			}
			return nil
		})
	fs.DurationVar(&o.AuthCacheTTL, "progress-auth-cache-ttl", o.AuthCacheTTL, "How long TokenReview and SubjectAccessReview results are cached.")
	fs.IntVar(&o.MaxConcurrentReviews, "progress-max-concurrent-reviews", o.MaxConcurrentReviews, "TokenReviews and SubjectAccessReviews in flight at most.")
	fs.DurationVar(&o.ReviewWait, "progress-review-wait", o.ReviewWait, "How long a request may wait for a review slot before it is answered 429.")
	fs.Float64Var(&o.FailedLoginsPerSecond, "progress-failed-logins-per-second", o.FailedLoginsPerSecond, "Each client address's budget of refused bearer tokens, per second.")
	fs.IntVar(&o.FailedLoginBurst, "progress-failed-login-burst", o.FailedLoginBurst, "Each client address's budget of refused bearer tokens, at once.")
	fs.Float64Var(&o.NewTokensPerSecond, "progress-new-tokens-per-second", o.NewTokensPerSecond, "Each identity's budget of new bearer tokens reviewed, per second.")
	fs.IntVar(&o.NewTokenBurst, "progress-new-token-burst", o.NewTokenBurst, "Each identity's budget of new bearer tokens reviewed, at once.")
	fs.Float64Var(&o.UnverifiableReviewsPerSecond, "progress-unverifiable-reviews-per-second", o.UnverifiableReviewsPerSecond,
		"Reviews of new tokens the endpoint cannot check itself (OIDC, legacy), per second across all clients (twice as many at once).")
	fs.Func("progress-trusted-proxies", "CIDRs of proxies whose X-Forwarded-For names the client budgets are charged to (repeatable or comma-separated); default: none.",
		func(s string) error {
			o.TrustedProxies = append(o.TrustedProxies, strings.Split(s, ",")...)
			return nil
		})
	fs.IntVar(&o.MaxConnections, "progress-max-connections", o.MaxConnections, "Connections each listener serves at once at most.")
	fs.IntVar(&o.MaxConnectionsPerAddress, "progress-max-connections-per-address", o.MaxConnectionsPerAddress, "Connections each listener serves at once from one client address (IPv6: a /64).")
	fs.DurationVar(&o.Timeouts.Header, "progress-header-timeout", o.Timeouts.Header, "How long a connection may take for its TLS handshake and a request's headers.")
	fs.DurationVar(&o.Timeouts.Idle, "progress-idle-timeout", o.Timeouts.Idle, "How long an authenticated connection may wait for its next request.")
	fs.DurationVar(&o.RequestTimeout, "progress-request-timeout", o.RequestTimeout, "How long one request may take.")
	fs.BoolVar(&o.EnableHTTP2, "progress-enable-http2", o.EnableHTTP2, "Allow HTTP/2 on the progress endpoint.")
	fs.IntVar(&o.MaxStreams, "progress-max-streams", o.MaxStreams, "Event streams (Accept: text/event-stream) open at once at most.")
	fs.IntVar(&o.MaxStreamsPerUser, "progress-max-streams-per-user", o.MaxStreamsPerUser, "Event streams one user may have open at once.")
	fs.DurationVar(&o.StreamHeartbeat, "progress-stream-heartbeat", o.StreamHeartbeat, "How often an event stream sends a heartbeat comment.")
	fs.DurationVar(&o.StreamLifetime, "progress-stream-lifetime", o.StreamLifetime, "How long an event stream lasts before the client reconnects.")
	fs.BoolVar(&o.Ingest, "progress-ingest", o.Ingest, "Take progress pushed by tasks' pods to the endpoint and write it to their status within a budget.")
	fs.DurationVar(&o.FlushInterval, "progress-flush-interval", o.FlushInterval, "With --progress-ingest: how often at most a task's pushed progress is written to its status (a pod's last values and a task's end at once).")
	fs.Float64Var(&o.WriteBudget, "progress-write-budget", o.WriteBudget, "With --progress-ingest: status writes a second at most, across all tasks (the longest unwritten first).")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Address of the metrics endpoint (HTTPS behind the same front door unless --metrics-secure=false); 0 disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS, authenticated and authorized by the API server; false: plain HTTP, loopback addresses only.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress, "Address the /healthz and /readyz probes bind to; 0 disables them.")
}

// Enabled reports whether the endpoint is to run.
func (o *Options) Enabled() bool { return enabled(o.BindAddress) }

func enabled(addr string) bool { return addr != "" && addr != "0" }

// MetricsServesTLS reports whether the metrics port is served over HTTPS.
func (o *Options) MetricsServesTLS() bool { return enabled(o.MetricsBindAddress) && o.MetricsSecure }

// door is the front door's share of the options.
func (o *Options) door() (frontdoor.Options, error) {
	proxies, err := frontdoor.ParseTrustedProxies(o.TrustedProxies)
	if err != nil {
		return frontdoor.Options{}, errors.New("--progress-trusted-proxies: " + err.Error())
	}
	d := frontdoor.DefaultOptions()
	d.CacheTTL, d.MaxConcurrentReviews, d.ReviewWait = o.AuthCacheTTL, o.MaxConcurrentReviews, o.ReviewWait
	d.FailedLoginsPerSecond, d.FailedLoginBurst = o.FailedLoginsPerSecond, o.FailedLoginBurst
	d.NewTokensPerSecond, d.NewTokenBurst = o.NewTokensPerSecond, o.NewTokenBurst
	d.UnverifiableReviewsPerSecond = o.UnverifiableReviewsPerSecond
	d.TrustedProxies = proxies
	return d, nil
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Enabled() {
		if _, _, err := net.SplitHostPort(o.BindAddress); err != nil {
			errs = append(errs, errors.New("--progress-bind-address: "+err.Error()))
		}
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--progress-tls-cert-file and --progress-tls-private-key-file go together"))
	}
	if o.TLSCertFile == "" && len(o.DNSNames) == 0 {
		errs = append(errs, errors.New("--progress-dns-names is needed for a self-signed certificate"))
	}
	if o.PathPrefix != "" && (!strings.HasPrefix(o.PathPrefix, "/") || strings.HasSuffix(o.PathPrefix, "/")) {
		errs = append(errs, errors.New("--progress-path-prefix must start with / and not end with one"))
	}
	if d, err := o.door(); err != nil {
		errs = append(errs, err)
	} else if err := d.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Ingest && (o.FlushInterval <= 0 || o.WriteBudget < 1) {
		errs = append(errs, errors.New("--progress-flush-interval must be positive and --progress-write-budget at least 1"))
	}
	if o.Ingest && !o.Enabled() {
		errs = append(errs, errors.New("--progress-ingest takes pushes on the endpoint: it needs --progress-bind-address"))
	}
	if o.RequestTimeout <= 0 {
		errs = append(errs, errors.New("--progress-request-timeout must be positive"))
	}
	if o.MaxConnections < 1 || o.MaxConnectionsPerAddress < 1 {
		errs = append(errs, errors.New("--progress-max-connections and --progress-max-connections-per-address must be at least 1"))
	}
	if o.Timeouts.Header <= 0 || o.Timeouts.Read <= 0 || o.Timeouts.Write <= 0 || o.Timeouts.Idle <= 0 {
		errs = append(errs, errors.New("--progress-header-timeout and --progress-idle-timeout must be positive"))
	}
	for flag, addr := range map[string]string{"--metrics-bind-address": o.MetricsBindAddress, "--health-probe-bind-address": o.HealthProbeBindAddress} {
		if enabled(addr) {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				errs = append(errs, errors.New(flag+": "+err.Error()))
			}
		}
	}
	if enabled(o.MetricsBindAddress) && !o.MetricsSecure {
		if err := LoopbackOnly(o.MetricsBindAddress); err != nil {
			errs = append(errs, errors.New("--metrics-secure=false: metrics without authentication: "+err.Error()))
		}
	}
	if o.MaxStreams < 1 || o.MaxStreamsPerUser < 1 || o.StreamHeartbeat <= 0 || o.StreamLifetime <= 0 {
		errs = append(errs, errors.New("--progress-max-streams(-per-user) must be at least 1 and the stream heartbeat and lifetime positive"))
	}
	if o.AuthCacheTTL < 0 {
		errs = append(errs, errors.New("--progress-auth-cache-ttl must not be negative"))
	}
	return errors.Join(errs...)
}

// LoopbackOnly accepts "0" (off) or a loopback address (127.0.0.1:PORT, [::1]:PORT,
// localhost:PORT): for what answers anyone who reaches it (pprof, unauthenticated metrics).
func LoopbackOnly(addr string) error {
	if addr == "0" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q: it is unauthenticated, bind it to a loopback address (127.0.0.1:PORT) or 0", addr)
	}
	return nil
}
