// Package apiserver serves a task's progress over HTTPS, in the shape of Cloudreve v4's
// GET /workflow/progress/{id}: directly with a bearer JWT, and through the Kubernetes
// aggregation layer (APIService v1alpha1.progress.taskops.dev). Callers are authenticated and
// authorized by k8s.io/apiserver's delegating authenticator and authorizer (TokenReview,
// front-proxy certificates, SubjectAccessReview); tasks are read from the manager's informer
// cache. Options → Config → Complete → Server, like metrics-server.
package apiserver

import (
	"errors"
	"flag"
	"net"
	"strings"
	"time"
)

// Options are the endpoint's command-line options.
type Options struct {
	// BindAddress is where it listens (HTTPS only); empty or "0" turns it off.
	BindAddress string
	// TLSCertFile and TLSKeyFile are a serving certificate (e.g. a mounted Secret), reloaded
	// when they change. Without them a self-signed certificate for DNSNames is made at start.
	TLSCertFile, TLSKeyFile string
	// DNSNames are the names of the endpoint's Service, for the self-signed certificate.
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
	// logins (bearer tokens the API server refused); over it, a client may send no new token
	// until the budget refills (429), while tokens already reviewed keep working.
	FailedLoginsPerSecond float64
	FailedLoginBurst      int
	// MaxConnections bounds the connections served at once (more wait to be accepted).
	MaxConnections int
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
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		BindAddress: ":9443",
		DNSNames: []string{"workflowtask-progress.workflowtask-system.svc",
			"workflowtask-progress.workflowtask-system.svc.cluster.local"},
		PathPrefix:            "/api/v4",
		AuthCacheTTL:          10 * time.Second,
		MaxConcurrentReviews:  16,
		ReviewWait:            time.Second,
		FailedLoginsPerSecond: 1,
		FailedLoginBurst:      20,
		MaxConnections:        2048,
		RequestTimeout:        15 * time.Second,
		MaxStreams:            1024,
		MaxStreamsPerUser:     16,
		StreamHeartbeat:       15 * time.Second,
		StreamLifetime:        30 * time.Minute,
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
	fs.IntVar(&o.MaxConnections, "progress-max-connections", o.MaxConnections, "Connections served at once at most.")
	fs.DurationVar(&o.RequestTimeout, "progress-request-timeout", o.RequestTimeout, "How long one request may take.")
	fs.BoolVar(&o.EnableHTTP2, "progress-enable-http2", o.EnableHTTP2, "Allow HTTP/2 on the progress endpoint.")
	fs.IntVar(&o.MaxStreams, "progress-max-streams", o.MaxStreams, "Event streams (Accept: text/event-stream) open at once at most.")
	fs.IntVar(&o.MaxStreamsPerUser, "progress-max-streams-per-user", o.MaxStreamsPerUser, "Event streams one user may have open at once.")
	fs.DurationVar(&o.StreamHeartbeat, "progress-stream-heartbeat", o.StreamHeartbeat, "How often an event stream sends a heartbeat comment.")
	fs.DurationVar(&o.StreamLifetime, "progress-stream-lifetime", o.StreamLifetime, "How long an event stream lasts before the client reconnects.")
}

// Enabled reports whether the endpoint is to run.
func (o *Options) Enabled() bool { return o.BindAddress != "" && o.BindAddress != "0" }

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
	if o.MaxConcurrentReviews < 1 {
		errs = append(errs, errors.New("--progress-max-concurrent-reviews must be at least 1"))
	}
	if o.ReviewWait <= 0 || o.RequestTimeout <= 0 {
		errs = append(errs, errors.New("--progress-review-wait and --progress-request-timeout must be positive"))
	}
	if o.FailedLoginsPerSecond <= 0 || o.FailedLoginBurst < 1 {
		errs = append(errs, errors.New("--progress-failed-logins-per-second must be positive and --progress-failed-login-burst at least 1"))
	}
	if o.MaxConnections < 1 {
		errs = append(errs, errors.New("--progress-max-connections must be at least 1"))
	}
	if o.MaxStreams < 1 || o.MaxStreamsPerUser < 1 || o.StreamHeartbeat <= 0 || o.StreamLifetime <= 0 {
		errs = append(errs, errors.New("--progress-max-streams(-per-user) must be at least 1 and the stream heartbeat and lifetime positive"))
	}
	if o.AuthCacheTTL < 0 {
		errs = append(errs, errors.New("--progress-auth-cache-ttl must not be negative"))
	}
	return errors.Join(errs...)
}
