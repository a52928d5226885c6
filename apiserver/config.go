package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/go-logr/logr"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// Config is everything the server needs, built from Options.
type Config struct {
	Options *Options
	// ReviewConfig reaches the API server for TokenReviews, SubjectAccessReviews, the
	// authentication ConfigMap and the service-account keys (the manager's own identity).
	ReviewConfig *rest.Config
	// Listener, MetricsListener and ProbesListener, when set, are used instead of listening on
	// the options' bind addresses.
	Listener, MetricsListener, ProbesListener net.Listener
	// Writer writes pushed progress to tasks' status; PodReader reads the pods and Jobs a push's
	// token names from a cache, LiveReader past it (with Options.Ingest: the manager's client,
	// twice, and its API reader).
	Writer                client.Client
	PodReader, LiveReader client.Reader
	// GetCertificate, when set and no certificate files are named, gives the serving
	// certificate (internal/servingcert's Source: the operator-managed Secret); the metrics
	// port serves it too.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Log            logr.Logger
}

// CompletedConfig is a Config with its front door, authenticators, authorizer and TLS config.
type CompletedConfig struct {
	*Config
	door                *frontdoor.Door
	authn, metricsAuthn *frontdoor.Authenticator
	// ingestAuthn takes pods' projected tokens for the ingest audience (with Options.Ingest).
	ingestAuthn *frontdoor.Authenticator
	authz       authorizer.Authorizer
	tls         *tls.Config
	reloaders   []controllerRunner
}

// controllerRunner keeps a dynamic certificate current.
type controllerRunner interface {
	RunOnce(ctx context.Context) error
	Run(ctx context.Context, workers int)
}

// Complete builds the front door every listener shares, the progress endpoint's authenticator
// (bearer tokens for the configured audiences), the metrics port's (kube-apiserver's own
// audience, as Prometheus' token is), the delegating authorizer (SubjectAccessReview) and the
// TLS config.
func (c *Config) Complete() (CompletedConfig, error) {
	if err := c.Options.Validate(); err != nil {
		return CompletedConfig{}, err
	}
	doorOpts, err := c.Options.door()
	if err != nil {
		return CompletedConfig{}, err
	}
	cc := CompletedConfig{Config: c}
	if cc.door, err = frontdoor.New(c.ReviewConfig, doorOpts, c.Log.WithName("front-door")); err != nil {
		return CompletedConfig{}, err
	}
	if cc.authn, err = cc.door.Authenticator(c.Options.TokenAudiences); err != nil {
		return CompletedConfig{}, err
	}
	if cc.metricsAuthn, err = cc.door.Authenticator(nil); err != nil {
		return CompletedConfig{}, err
	}
	if c.Options.Ingest {
		if cc.ingestAuthn, err = cc.door.PodTokenAuthenticator([]string{ingest.Audience}, maxPushers); err != nil {
			return CompletedConfig{}, err
		}
	}
	if cc.authz, err = cc.door.Authorizer(); err != nil {
		return CompletedConfig{}, err
	}
	if cc.tls, cc.reloaders, err = c.tlsConfig(); err != nil {
		return CompletedConfig{}, err
	}
	return cc, nil
}

// tlsConfig: TLS 1.2+, the serving certificate from files (reloaded: the reloader is returned,
// to be run with the server), from GetCertificate, or self-signed; client certificates
// requested (not required: the authenticators verify them); HTTP/1.1 unless HTTP/2 is enabled.
func (c *Config) tlsConfig() (*tls.Config, []controllerRunner, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert, NextProtos: []string{"http/1.1"}}
	if c.Options.EnableHTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if c.Options.TLSCertFile != "" {
		files, err := dynamiccertificates.NewDynamicServingContentFromFiles("progress-serving", c.Options.TLSCertFile, c.Options.TLSKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("serving certificate: %w", err)
		}
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			certPEM, keyPEM := files.CurrentCertKeyContent()
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			return &cert, err
		}
		return cfg, []controllerRunner{files}, nil
	}
	if c.GetCertificate != nil {
		cfg.GetCertificate = c.GetCertificate
		return cfg, nil, nil
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(c.Options.DNSNames[0], []net.IP{net.ParseIP("127.0.0.1")}, c.Options.DNSNames)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil, nil
}
