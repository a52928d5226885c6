// Package servingcert keeps the progress endpoint's serving certificate, the way Kueue and
// Gatekeeper keep their webhooks' (open-policy-agent/cert-controller), with two differences
// that keep the aggregated API available through every rotation:
//
//   - a CA and a serving certificate for the Service's DNS names live in one Secret; the CA
//     bundle (every CA still valid, newest first) is injected as caBundle into the APIService,
//     so kube-apiserver verifies the endpoint (no insecureSkipTLSVerify);
//   - a renewed CA is added to the bundle first and signs only after Propagation, and the old
//     CA stays trusted until it expires: there is no moment at which a replica serves a
//     certificate kube-apiserver does not trust.
//
// The Rotator (leader only) issues, renews and injects; a Source (every replica) serves what
// the Secret holds, read straight from the API (no kubelet volume delay).
package servingcert

import (
	"errors"
	"flag"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Keys of the Secret's data.
const (
	CACertKey     = "ca.crt"        // the CA that signs serving certificates
	CAKeyKey      = "ca.key"        // its key
	NextCACertKey = "ca-next.crt"   // the CA that will sign them, trusted meanwhile (during a renewal)
	NextCAKeyKey  = "ca-next.key"   // its key
	CertKey       = "tls.crt"       // the serving certificate
	KeyKey        = "tls.key"       // its key
	BundleKey     = "ca-bundle.crt" // every CA still trusted, newest first: the APIService's caBundle
	maxBundled    = 4               // CAs kept in the bundle at most
)

// Defaults.
const (
	DefaultSecretName   = "workflowtask-progress-cert"
	DefaultAPIService   = "v1alpha1.progress.taskops.dev"
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultPropagation is how long a new CA is in the bundle before certificates it signs are
	// served: enough for every kube-apiserver's informer to see the APIService change.
	DefaultPropagation = time.Minute
	// DefaultInterval is how often the Secret is read again (renewals are planned, this
	// catches others' edits: a removed caBundle, a replaced Secret).
	DefaultInterval = time.Minute
	// backdate is how far before issuing a certificate's validity starts (clock skew).
	backdate = time.Hour
)

// namespaceFile holds the pod's namespace in a pod.
const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Options say where the certificate lives and who is to trust it.
type Options struct {
	// Secret holds the CA, the serving certificate and the bundle; empty name: not used (the
	// endpoint serves files or a self-signed certificate).
	Secret types.NamespacedName
	// Manage issues and renews the certificate and injects the bundle; false only serves what
	// someone else keeps in the Secret (cert-manager: config/certmanager).
	Manage bool
	// DNSNames the serving certificate is for (the Service's names).
	DNSNames []string
	// APIServices receive the bundle as spec.caBundle.
	APIServices []string
	// CAValidity and CertValidity are the lifetimes of new certificates; each is renewed when
	// a third of its lifetime is left.
	CAValidity, CertValidity time.Duration
	// Propagation is how long a new CA is trusted before certificates it signs are served.
	Propagation time.Duration
	// Interval is how often the Secret is read again.
	Interval time.Duration
	// Clock is the time (tests step it).
	Clock clock.PassiveClock
}

// NewOptions returns the defaults: the Secret workflowtask-progress-cert in the pod's
// namespace (workflowtask-system outside a pod), managed, for the APIService
// v1alpha1.progress.taskops.dev.
func NewOptions() *Options {
	ns := "workflowtask-system"
	if b, err := os.ReadFile(namespaceFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		ns = strings.TrimSpace(string(b))
	}
	return &Options{
		Secret:       types.NamespacedName{Namespace: ns, Name: DefaultSecretName},
		Manage:       true,
		APIServices:  []string{DefaultAPIService},
		CAValidity:   DefaultCAValidity,
		CertValidity: DefaultCertValidity,
		Propagation:  DefaultPropagation,
		Interval:     DefaultInterval,
		Clock:        clock.RealClock{},
	}
}

// AddFlags adds the options to fs, prefixed "progress-cert-" (the DNS names are the
// endpoint's --progress-dns-names).
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Secret.Name, "progress-cert-secret", o.Secret.Name,
		"Secret that holds the progress endpoint's CA and serving certificate; empty: serve --progress-tls-cert-file or a self-signed certificate.")
	fs.StringVar(&o.Secret.Namespace, "progress-cert-namespace", o.Secret.Namespace, "Namespace of --progress-cert-secret (default: the pod's).")
	fs.BoolVar(&o.Manage, "progress-cert-manage", o.Manage,
		"Issue and renew the certificate in --progress-cert-secret and inject its CA bundle into the APIService; false: only serve it (cert-manager keeps it).")
	fs.Func("progress-cert-apiservices", "Comma-separated APIServices that get the CA bundle as caBundle (default "+strings.Join(o.APIServices, ",")+"); empty: none.",
		func(s string) error {
			o.APIServices = nil
			for _, a := range strings.Split(s, ",") {
				if a = strings.TrimSpace(a); a != "" {
					o.APIServices = append(o.APIServices, a)
				}
			}
			return nil
		})
	fs.DurationVar(&o.CAValidity, "progress-cert-ca-validity", o.CAValidity, "Lifetime of a new CA (renewed with a third left).")
	fs.DurationVar(&o.CertValidity, "progress-cert-validity", o.CertValidity, "Lifetime of a new serving certificate (renewed with a third left).")
}

// Enabled reports whether a Secret is named.
func (o *Options) Enabled() bool { return o.Secret.Name != "" }

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Secret.Namespace == "" {
		errs = append(errs, errors.New("--progress-cert-namespace is empty"))
	}
	if o.Manage && len(o.DNSNames) == 0 {
		errs = append(errs, errors.New("--progress-dns-names is empty: the serving certificate needs the Service's names"))
	}
	if o.CAValidity < 3*o.Propagation || o.CAValidity < 10*time.Minute || o.CertValidity < 10*time.Minute {
		errs = append(errs, errors.New("--progress-cert-ca-validity and --progress-cert-validity must be at least 10m"))
	}
	if o.Interval <= 0 || o.Propagation < 0 {
		errs = append(errs, errors.New("the check interval must be positive and the propagation delay not negative"))
	}
	return errors.Join(errs...)
}
