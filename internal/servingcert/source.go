package servingcert

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// loadingInterval is how often a Source without a certificate reads the Secret.
const loadingInterval = time.Second

// Source serves the certificate the serving Secret holds. It runs on every replica and needs
// only get on that Secret (never the CA Secret); it keeps the last good certificate when the
// Secret is unreadable or broken. One Source serves any number of listeners (the progress
// endpoint, the metrics server): GetCertificate is safe for concurrent use and every listener
// sees a renewal at once.
type Source struct {
	opts    *Options
	reader  client.Reader
	current atomic.Pointer[tls.Certificate]
	reload  chan struct{}
}

var (
	_ manager.Runnable               = (*Source)(nil)
	_ manager.LeaderElectionRunnable = (*Source)(nil)
)

// Setup adds to mgr what opts ask for: the Rotator when they manage the certificate or publish
// its CA bundle, and, when serve, a Source for TLS listeners (returned; nil otherwise). Call
// it once and hand the Source to every listener that serves this certificate (the progress
// endpoint's GetCertificate, the metrics server's TLSOpts with ConfigureTLS); serve must be
// true whenever one of them does.
func Setup(mgr manager.Manager, opts *Options, serve bool) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	var src *Source
	if serve {
		src = &Source{opts: opts, reader: mgr.GetAPIReader(), reload: make(chan struct{}, 1)}
		if err := mgr.Add(src); err != nil {
			return nil, err
		}
	}
	if opts.Manage || opts.BundleConfigMap != "" {
		r := &Rotator{opts: opts, reader: mgr.GetAPIReader(), writer: mgr.GetClient(), written: src.Reload}
		if err := mgr.Add(r); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// NeedLeaderElection is false: every replica serves.
func (s *Source) NeedLeaderElection() bool { return false }

// Reload reads the Secret again soon (a nil Source does nothing).
func (s *Source) Reload() {
	if s == nil {
		return
	}
	select {
	case s.reload <- struct{}{}:
	default:
	}
}

// Start reads the Secret every Interval (every second until a certificate is loaded) and on
// Reload, until ctx ends.
func (s *Source) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("serving-cert").WithValues("secret", s.opts.Secret)
	for {
		err := s.load(ctx)
		if err != nil {
			logger.Error(err, "Loading the progress endpoint's serving certificate; keeping the one served")
		}
		wait := s.opts.Interval
		if s.current.Load() == nil {
			wait = loadingInterval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.reload:
		case <-time.After(wait):
		}
	}
}

func (s *Source) load(ctx context.Context) error {
	secret := &corev1.Secret{}
	if err := s.reader.Get(ctx, s.opts.Secret, secret); err != nil {
		return fmt.Errorf("reading the Secret %s: %w", s.opts.Secret, err)
	}
	certPEM, keyPEM := secret.Data[CertKey], secret.Data[KeyKey]
	if len(certPEM) == 0 && s.opts.Manage {
		return nil // the Rotator has not issued it yet
	}
	if cur := s.current.Load(); cur != nil && len(cur.Certificate) > 0 && string(cur.Certificate[0]) == string(firstDER(certPEM)) {
		return nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("the Secret %s: %w", s.opts.Secret, err)
	}
	s.current.Store(&cert)
	log.FromContext(ctx).Info("Serving a new certificate", "serving", subject(certPEM))
	return nil
}

func firstDER(certPEM []byte) []byte {
	if certs := parseCerts(certPEM); len(certs) > 0 {
		return certs[0].Raw
	}
	return nil
}

// ConfigureTLS makes c serve the Source's certificate: a TLS option for a second listener,
// e.g. controller-runtime's metricsserver.Options.TLSOpts (which then neither reads CertDir
// nor makes a self-signed certificate). Earlier static Certificates are dropped so that no
// client without SNI gets another certificate.
func (s *Source) ConfigureTLS(c *tls.Config) {
	c.Certificates = nil
	c.GetCertificate = s.GetCertificate
}

// GetCertificate is tls.Config's: the certificate loaded last.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := s.current.Load(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("no serving certificate loaded yet")
}

// Ready is a readiness check (healthz.Checker): ready once a certificate is loaded.
func (s *Source) Ready(*http.Request) error {
	if s.current.Load() == nil {
		return fmt.Errorf("no serving certificate from the Secret %s yet", s.opts.Secret)
	}
	return nil
}
