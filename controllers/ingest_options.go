package controllers

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// IngestServiceName is the Service the operator's ingest endpoint is reached by (it routes to
// the replica that writes the status), in the operator's namespace: the default push URL's host.
const IngestServiceName = "workflowtask-progress-ingest"

// DefaultIngestURL is the push URL's default base: the ingest Service in namespace.
func DefaultIngestURL(namespace string) string {
	return "https://" + IngestServiceName + "." + namespace + ".svc"
}

// namespaceFile holds the pod's namespace in a pod that mounts its ServiceAccount token.
const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// operatorNamespace is the namespace the operator runs in: $POD_NAMESPACE (the downward API,
// config/manager), else the ServiceAccount's namespace file, else workflowtask-system (outside a
// pod: config/default's namespace).
func operatorNamespace() string {
	if ns := strings.TrimSpace(os.Getenv("POD_NAMESPACE")); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(namespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return "workflowtask-system"
}

// validateIngest checks the ingest options: the URL always (it has a default), the CA file when
// one is named.
func (o *Options) validateIngest() []error {
	var errs []error
	if err := validateIngestURL(o.IngestURL); err != nil {
		errs = append(errs, fmt.Errorf("--progress-ingest-url: %w", err))
	}
	if o.IngestCAFile != "" {
		if data, err := os.ReadFile(o.IngestCAFile); err != nil {
			errs = append(errs, fmt.Errorf("--progress-ingest-ca-file: %w", err))
		} else if err := parseCABundle(data); err != nil {
			errs = append(errs, fmt.Errorf("--progress-ingest-ca-file %s: %w", o.IngestCAFile, err))
		}
	}
	return errs
}

// validateIngestURL checks a push URL's base: https, a host, no credentials, query or fragment.
func validateIngestURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "https":
		return fmt.Errorf("%q is not an https URL (the pods send their token to it)", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q names no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return fmt.Errorf("%q must be https://host[:port][/path], without credentials, query or fragment", s)
	}
	return nil
}

// IngestDefaults are the pod defaults of ingest mode for these options: the push URL's base, and
// the CA bundle from IngestCAFile when set, else from the ConfigMap bundle (the serving
// certificate's --progress-cert-ca-bundle-configmap in its namespace; empty: none) read
// through reader.
func (o *Options) IngestDefaults(reader client.Reader, bundle types.NamespacedName) (*IngestDefaults, error) {
	d := &IngestDefaults{URL: strings.TrimSuffix(o.IngestURL, "/")}
	switch {
	case o.IngestCAFile != "":
		ca, err := NewFileCABundle(o.IngestCAFile)
		if err != nil {
			return nil, fmt.Errorf("--progress-ingest-ca-file: %w", err)
		}
		d.CA = ca
	case bundle.Name != "" && bundle.Namespace != "":
		d.CA = NewConfigMapCABundle(reader, bundle)
	default:
		return nil, errors.New("--progress-ingest: the pods need the CA bundle of the ingest endpoint: set --progress-ingest-ca-file, " +
			"or let the operator keep the serving certificate (--progress-cert-secret) and publish its bundle (--progress-cert-ca-bundle-configmap)")
	}
	return d, nil
}
