// Package servingcert keeps the progress endpoint's serving certificate, the way Kueue and
// Gatekeeper keep their webhooks' (open-policy-agent/cert-controller), with differences that
// keep the aggregated API available through every rotation and the CA's keys away from the
// pods that serve:
//
//   - the CA (its keys, the next CA during a renewal, the retired CAs still trusted) lives in
//     a Secret only the operator reads (CASecretName); the serving certificate for the
//     Service's DNS names (the progress endpoint's and the metrics Service's) lives in another
//     (Secret) that holds tls.crt and tls.key only, which is all a serving pod may see;
//   - the CA bundle (every CA of the operator's own still valid, newest first) is injected as
//     caBundle into the APIService, so kube-apiserver verifies the endpoint (no
//     insecureSkipTLSVerify), and published in a ConfigMap (BundleConfigMap, key ca.crt, like
//     kube-root-ca.crt) for direct clients and Prometheus;
//   - a renewed CA is added to the bundle first and signs only after Propagation, and the old
//     CA stays trusted until it expires: there is no moment at which a replica serves a
//     certificate kube-apiserver does not trust;
//   - the bundle is computed from the CA Secret alone, never read back from where it is
//     published (the serving Secret, the ConfigMap, the APIService): a CA planted there is
//     dropped at the next round. The CAs kept are the operator's own: the signing and next CA
//     (with their keys) and the CAs it retired itself (self-signed, its subject).
//
// The Rotator (leader only) issues, renews, injects and publishes; with cert-manager keeping
// the certificate (Manage false) it only publishes the serving Secret's ca.crt. A Source
// (every replica) serves what the serving Secret holds, read straight from the API (no
// kubelet volume delay), to any number of listeners (GetCertificate, ConfigureTLS).
package servingcert

import (
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Keys of the CA Secret's data (CASecretName: the operator's alone).
const (
	CACertKey        = "ca.crt"         // the CA that signs serving certificates
	CAKeyKey         = "ca.key"         // its key
	NextCACertKey    = "ca-next.crt"    // the CA that will sign them, trusted meanwhile (during a renewal)
	NextCAKeyKey     = "ca-next.key"    // its key
	RetiredCACertKey = "ca-retired.crt" // CAs that signed before, trusted until they expire (no keys)
	maxBundled       = 4                // CAs kept in the bundle at most
)

// Keys of the serving Secret's data (Secret: what a serving pod may read).
const (
	CertKey = "tls.crt" // the serving certificate
	KeyKey  = "tls.key" // its key
)

// BundleKey is the bundle ConfigMap's key: every CA still trusted, newest first (PEM), as
// kube-root-ca.crt's; also the APIService's caBundle.
const BundleKey = "ca.crt"

// issuerCACertKey is where cert-manager puts the issuing CA in the serving Secret (Manage
// false): the bundle to publish.
const issuerCACertKey = "ca.crt"

// Keys the serving Secret held before the CA moved to a Secret of its own: read once to adopt
// that CA (no new, untrusted CA on upgrade), then removed.
const (
	legacyCACertKey     = "ca.crt"
	legacyCAKeyKey      = "ca.key"
	legacyNextCACertKey = "ca-next.crt"
	legacyNextCAKeyKey  = "ca-next.key"
	legacyBundleKey     = "ca-bundle.crt"
)

// Defaults.
const (
	DefaultSecretName = "workflowtask-progress-cert"
	// DefaultCASecretName is distinct from config/certmanager's CA Secret
	// (workflowtask-progress-ca, cert-manager's layout): switching modes never mixes the two.
	DefaultCASecretName    = "workflowtask-progress-signing-ca"
	DefaultBundleConfigMap = "workflowtask-progress-ca-bundle"
	DefaultAPIService      = "v1alpha1.progress.taskops.dev"
	// DefaultMetricsService is the metrics Service as config/default names it (its DNS names
	// are in the serving certificate: the metrics listener serves it too).
	DefaultMetricsService = "workflowtask-controller-manager-metrics-service"
	DefaultCAValidity     = 10 * 365 * 24 * time.Hour
	DefaultCertValidity   = 365 * 24 * time.Hour
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
	// Secret holds the serving certificate (tls.crt, tls.key); empty name: not used (the
	// endpoint serves files or a self-signed certificate).
	Secret types.NamespacedName
	// CASecretName, in Secret's namespace, holds the CA and its keys (Manage only): a Secret no
	// serving pod may read.
	CASecretName string
	// BundleConfigMap, in Secret's namespace, receives the CA bundle (key ca.crt); empty: none.
	BundleConfigMap string
	// Manage issues and renews the certificate and injects the bundle; false only serves what
	// someone else keeps in the Secret (cert-manager: config/certmanager) and publishes its
	// ca.crt to BundleConfigMap.
	Manage bool
	// DNSNames the serving certificate is for (the progress Service's names).
	DNSNames []string
	// MetricsDNSNames are the metrics Service's names, also in the serving certificate.
	MetricsDNSNames []string
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

// NewOptions returns the defaults: the Secrets workflowtask-progress-cert and
// workflowtask-progress-signing-ca and the ConfigMap workflowtask-progress-ca-bundle in the
// pod's namespace (workflowtask-system outside a pod), managed, for the APIService
// v1alpha1.progress.taskops.dev and the metrics Service of that namespace.
func NewOptions() *Options {
	ns := "workflowtask-system"
	if b, err := os.ReadFile(namespaceFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		ns = strings.TrimSpace(string(b))
	}
	return &Options{
		Secret:          types.NamespacedName{Namespace: ns, Name: DefaultSecretName},
		CASecretName:    DefaultCASecretName,
		BundleConfigMap: DefaultBundleConfigMap,
		Manage:          true,
		MetricsDNSNames: ServiceDNSNames(DefaultMetricsService, ns),
		APIServices:     []string{DefaultAPIService},
		CAValidity:      DefaultCAValidity,
		CertValidity:    DefaultCertValidity,
		Propagation:     DefaultPropagation,
		Interval:        DefaultInterval,
		Clock:           clock.RealClock{},
	}
}

// ServiceDNSNames are a Service's in-cluster names: <name>.<namespace>.svc and
// <name>.<namespace>.svc.cluster.local.
func ServiceDNSNames(name, namespace string) []string {
	return []string{name + "." + namespace + ".svc", name + "." + namespace + ".svc.cluster.local"}
}

// CASecret is the CA Secret's name and namespace.
func (o *Options) CASecret() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Secret.Namespace, Name: o.CASecretName}
}

// BundleConfigMapName is the bundle ConfigMap's name and namespace.
func (o *Options) BundleConfigMapName() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Secret.Namespace, Name: o.BundleConfigMap}
}

// certDNSNames are the names the serving certificate is for: DNSNames, then MetricsDNSNames,
// each once.
func (o *Options) certDNSNames() []string {
	var out []string
	for _, n := range append(slices.Clone(o.DNSNames), o.MetricsDNSNames...) {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// AddFlags adds the options to fs, prefixed "progress-cert-" (the DNS names are the
// endpoint's --progress-dns-names).
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Secret.Name, "progress-cert-secret", o.Secret.Name,
		"Secret that holds the progress endpoint's CA and serving certificate; empty: serve --progress-tls-cert-file or a self-signed certificate.")
	fs.StringVar(&o.Secret.Namespace, "progress-cert-namespace", o.Secret.Namespace,
		"Namespace of --progress-cert-secret, --progress-cert-ca-secret and --progress-cert-ca-bundle-configmap (default: the pod's).")
	fs.StringVar(&o.CASecretName, "progress-cert-ca-secret", o.CASecretName,
		"Secret that holds the CA and its keys (with --progress-cert-manage): only the operator may read it, never a serving pod.")
	fs.StringVar(&o.BundleConfigMap, "progress-cert-ca-bundle-configmap", o.BundleConfigMap,
		"ConfigMap that receives the CA bundle under ca.crt, for direct clients and Prometheus; empty: none.")
	fs.BoolVar(&o.Manage, "progress-cert-manage", o.Manage,
		"Issue and renew the certificate in --progress-cert-secret and inject its CA bundle into the APIService; false: only serve it (cert-manager keeps it) and publish its ca.crt.")
	fs.Func("progress-cert-metrics-dns-names", "Comma-separated DNS names of the metrics Service, also in the serving certificate (default "+strings.Join(o.MetricsDNSNames, ",")+"); empty: none.",
		commaList(&o.MetricsDNSNames))
	fs.Func("progress-cert-apiservices", "Comma-separated APIServices that get the CA bundle as caBundle (default "+strings.Join(o.APIServices, ",")+"); empty: none.",
		commaList(&o.APIServices))
	fs.DurationVar(&o.CAValidity, "progress-cert-ca-validity", o.CAValidity, "Lifetime of a new CA (renewed with a third left).")
	fs.DurationVar(&o.CertValidity, "progress-cert-validity", o.CertValidity, "Lifetime of a new serving certificate (renewed with a third left).")
}

// commaList sets *dst to a flag's comma-separated values, blanks dropped (empty: none).
func commaList(dst *[]string) func(string) error {
	return func(s string) error {
		*dst = nil
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*dst = append(*dst, v)
			}
		}
		return nil
	}
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
	if o.Manage && (o.CASecretName == "" || o.CASecretName == o.Secret.Name) {
		errs = append(errs, errors.New("--progress-cert-ca-secret must name a Secret other than --progress-cert-secret: serving pods read that one"))
	}
	if o.CAValidity < 3*o.Propagation || o.CAValidity < 10*time.Minute || o.CertValidity < 10*time.Minute {
		errs = append(errs, errors.New("--progress-cert-ca-validity and --progress-cert-validity must be at least 10m"))
	}
	if o.Interval <= 0 || o.Propagation < 0 {
		errs = append(errs, errors.New("the check interval must be positive and the propagation delay not negative"))
	}
	return errors.Join(errs...)
}
