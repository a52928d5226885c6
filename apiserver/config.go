package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// maxLoginClients bounds the client addresses whose failed logins are counted (least recently
// seen ones are forgotten first).
const maxLoginClients = 10000

// The ConfigMap in which kube-apiserver publishes its client CA and front-proxy settings.
const (
	authConfigMapNamespace = "kube-system"
	authConfigMapName      = "extension-apiserver-authentication"
)

// Config is everything the server needs, built from Options.
type Config struct {
	Options *Options
	// ReviewConfig reaches the API server for TokenReviews, SubjectAccessReviews and the
	// authentication ConfigMap (the manager's own identity).
	ReviewConfig *rest.Config
	// Reader reads tasks (the manager's cache, with IndexTaskID).
	Reader client.Reader
	// Listener, when set, is used instead of listening on Options.BindAddress.
	Listener net.Listener
	// GetCertificate, when set and no certificate files are named, gives the serving
	// certificate (internal/servingcert's Source: the operator-managed Secret).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Log            logr.Logger
}

// controllerRunner is a dynamic-certificate controller: RunOnce loads, Run keeps current.
type controllerRunner interface {
	RunOnce(ctx context.Context) error
	Run(ctx context.Context, workers int)
}

// CompletedConfig is a Config with its authenticator, authorizer and TLS settings built.
type CompletedConfig struct {
	*Config
	authn       authenticator.Request
	authz       authorizer.Authorizer
	tls         *tls.Config
	controllers []controllerRunner
	logins      *loginLimiter
	// rejected remembers refused tokens (by hash): its size is a metric.
	rejected *rejectionCache
}

// Complete builds the delegating authenticator (front proxy, client certificates, bearer
// tokens via TokenReview), the delegating authorizer (SubjectAccessReview), and the TLS config.
func (c *Config) Complete() (CompletedConfig, error) {
	if err := c.Options.Validate(); err != nil {
		return CompletedConfig{}, err
	}
	cs, err := kubernetes.NewForConfig(c.ReviewConfig)
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("client: %w", err)
	}
	// The review clients: no client-side rate limit (one client's junk would queue everyone's
	// first reviews behind it); the gate bounds reviews in flight instead, and only requests
	// that really send one take a slot. Refused tokens are answered from their cache before
	// the gate.
	rc := rest.CopyConfig(c.ReviewConfig)
	rc.QPS = -1
	rc = newReviewGate(c.Options.MaxConcurrentReviews, c.Options.ReviewWait).wrap(rc)
	accessReviews, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("review client: %w", err)
	}
	cc := CompletedConfig{Config: c, rejected: newRejectionCache(c.Options.AuthCacheTTL, clock.RealClock{}),
		logins: newLoginLimiter(c.Options.FailedLoginsPerSecond, c.Options.FailedLoginBurst, maxLoginClients)}
	tokenReviews, err := kubernetes.NewForConfig(cacheRejectedTokenReviews(rc, cc.rejected))
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("token review client: %w", err)
	}

	// kube-apiserver's front-proxy CA and header names, and its client CA, kept current from
	// the authentication ConfigMap. Without these controllers running, front-proxy requests
	// silently become anonymous.
	requestHeaderCA, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", authConfigMapNamespace, authConfigMapName, "requestheader-client-ca-file", cs)
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("front-proxy CA: %w", err)
	}
	requestHeader := headerrequest.NewRequestHeaderAuthRequestController(authConfigMapName, authConfigMapNamespace, cs,
		"requestheader-username-headers", "requestheader-uid-headers", "requestheader-group-headers",
		"requestheader-extra-headers-prefix", "requestheader-allowed-names")
	clientCA, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", authConfigMapNamespace, authConfigMapName, "client-ca-file", cs)
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("client CA: %w", err)
	}
	cc.controllers = append(cc.controllers, requestHeaderCA, requestHeader, clientCA)

	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	slice := func(f func() []string) headerrequest.StringSliceProvider {
		return headerrequest.StringSliceProviderFunc(f)
	}
	cc.authn, _, err = authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                          nil, // no anonymous access: "Login required"
		TokenAccessReviewClient:            tokenReviews.AuthenticationV1(),
		TokenAccessReviewTimeout:           10 * time.Second,
		WebhookRetryBackoff:                &backoff,
		CacheTTL:                           c.Options.AuthCacheTTL,
		ClientCertificateCAContentProvider: clientCA,
		// Without audiences, service-account tokens for the API server's own audience and OIDC
		// tokens the cluster trusts both pass; with them, only tokens for those audiences do
		// (kube-apiserver treats OIDC tokens as for its own audiences).
		APIAudiences: authenticator.Audiences(c.Options.TokenAudiences),
		RequestHeaderConfig: &authenticatorfactory.RequestHeaderConfig{
			CAContentProvider:   requestHeaderCA,
			UsernameHeaders:     slice(requestHeader.UsernameHeaders),
			UIDHeaders:          slice(requestHeader.UIDHeaders),
			GroupHeaders:        slice(requestHeader.GroupHeaders),
			ExtraHeaderPrefixes: slice(requestHeader.ExtraHeaderPrefixes),
			AllowedClientNames:  slice(requestHeader.AllowedClientNames),
		},
	}.New()
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("delegating authenticator: %w", err)
	}
	cc.authz, err = authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: accessReviews.AuthorizationV1(),
		AllowCacheTTL:             c.Options.AuthCacheTTL,
		DenyCacheTTL:              c.Options.AuthCacheTTL,
		WebhookRetryBackoff:       &backoff,
	}.New()
	if err != nil {
		return CompletedConfig{}, fmt.Errorf("delegating authorizer: %w", err)
	}

	var reloaders []controllerRunner
	if cc.tls, reloaders, err = c.tlsConfig(); err != nil {
		return CompletedConfig{}, err
	}
	cc.controllers = append(cc.controllers, reloaders...)
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
