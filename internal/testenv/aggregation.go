package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ConfigureAggregation gives the environment's kube-apiserver the aggregation layer's flags: a
// front-proxy CA (written in dir), the names it allows, the request headers, and the client
// certificate the aggregator presents.
func ConfigureAggregation(e *envtest.Environment, dir string) error {
	caFile, certFile, keyFile, err := frontProxyCerts(dir)
	if err != nil {
		return err
	}
	e.ControlPlane.GetAPIServer().Configure().
		Set("requestheader-client-ca-file", caFile).
		Set("requestheader-allowed-names", "front-proxy-client").
		Set("requestheader-username-headers", "X-Remote-User").
		Set("requestheader-group-headers", "X-Remote-Group").
		Set("requestheader-extra-headers-prefix", "X-Remote-Extra-").
		Set("proxy-client-cert-file", certFile).
		Set("proxy-client-key-file", keyFile)
	return nil
}

// InstallAggregation applies config/apiserver's APIService (changed by mutate, when given) and
// roles and config/admission's owner policy, and routes the APIService to an endpoint on
// localhost:port through an ExternalName Service (the aggregator then dials
// localhost:<APIService port>, verifying the certificate for the Service's DNS name unless the
// APIService says otherwise); it returns when the aggregator finds the APIService available.
func InstallAggregation(ctx context.Context, c client.Client, port int, mutate func(apiService *unstructured.Unstructured) error) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "workflowtask-progress", Namespace: OperatorNamespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	if err := c.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating the ExternalName Service: %w", err)
	}
	for _, f := range []string{"apiserver/apiservice.yaml", "apiserver/progress_admin_role.yaml", "apiserver/progress_reader_role.yaml",
		"admission/owner_policy.yaml", "admission/owner_assigner_role.yaml"} {
		objs, err := ReadObjects(filepath.Join(root, "config", f))
		if err != nil {
			return err
		}
		for _, u := range objs {
			switch u.GetKind() {
			case "APIService":
				if err := unstructured.SetNestedField(u.Object, int64(port), "spec", "service", "port"); err != nil {
					return err
				}
				if mutate != nil {
					if err := mutate(u); err != nil {
						return err
					}
				}
			case "ClusterRole", "ClusterRoleBinding":
				Prefixed(u) // as config/operator's namePrefix does
			}
			if err := c.Create(ctx, u); err != nil {
				return fmt.Errorf("creating %s %s from %s: %w", u.GetKind(), u.GetName(), f, err)
			}
		}
	}
	// Ready when the aggregator finds it available.
	deadline := time.Now().Add(60 * time.Second)
	for {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiregistration.k8s.io/v1")
		u.SetKind("APIService")
		if err := c.Get(ctx, client.ObjectKey{Name: "v1alpha1.progress.taskops.dev"}, u); err == nil {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Available" && m["status"] == "True" {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("APIService not available: %v", conds)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Prefixed names a cluster-scoped object of config/ as config/operator's namePrefix does.
func Prefixed(u *unstructured.Unstructured) {
	if !strings.HasPrefix(u.GetName(), "workflowtask-") {
		u.SetName("workflowtask-" + u.GetName())
	}
	if ref, ok, _ := unstructured.NestedString(u.Object, "roleRef", "name"); ok && !strings.HasPrefix(ref, "workflowtask-") && !strings.HasPrefix(ref, "system:") {
		_ = unstructured.SetNestedField(u.Object, "workflowtask-"+ref, "roleRef", "name")
	}
}

// frontProxyCerts writes a front-proxy CA and a client certificate signed by it (CN
// front-proxy-client), as kube-apiserver's --requestheader-client-ca-file and
// --proxy-client-{cert,key}-file want them.
func frontProxyCerts(dir string) (caFile, certFile, keyFile string, err error) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "front-proxy-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "front-proxy-client"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	caFile, certFile, keyFile = filepath.Join(dir, "front-proxy-ca.crt"), filepath.Join(dir, "front-proxy-client.crt"), filepath.Join(dir, "front-proxy-client.key")
	for path, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return "", "", "", err
		}
	}
	return caFile, certFile, keyFile, nil
}
