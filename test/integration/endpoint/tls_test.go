package endpoint_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/servingcert"
)

// serviceName is the name the aggregator checks the endpoint's certificate against.
const serviceName = "workflowtask-progress.workflowtask-system.svc"

func apiService(g gomega.Gomega, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apiregistration.k8s.io/v1")
	u.SetKind("APIService")
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, u)).To(gomega.Succeed())
	return u
}

// caBundle is an APIService's spec.caBundle, decoded.
func caBundle(g gomega.Gomega, u *unstructured.Unstructured) []byte {
	s, _, _ := unstructured.NestedString(u.Object, "spec", "caBundle")
	b, err := base64.StdEncoding.DecodeString(s)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	return b
}

// available is an APIService's Available condition: status and message.
func available(u *unstructured.Unstructured) (string, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Available" {
			status, _ := m["status"].(string)
			msg, _ := m["message"].(string)
			return status, msg
		}
	}
	return "", ""
}

func availableStatus(u *unstructured.Unstructured) string {
	status, _ := available(u)
	return status
}

func certSecretData(g gomega.Gomega) map[string][]byte { return secretData(g, certSecret) }

func caSecretData(g gomega.Gomega) map[string][]byte { return secretData(g, caSecret) }

func secretData(g gomega.Gomega, key client.ObjectKey) map[string][]byte {
	s := &corev1.Secret{}
	g.Expect(k8sClient.Get(context.Background(), key, s)).To(gomega.Succeed())
	return s.Data
}

// publishedBundle is the CA bundle ConfigMap's ca.crt.
func publishedBundle(g gomega.Gomega) []byte {
	cm := &corev1.ConfigMap{}
	g.Expect(k8sClient.Get(context.Background(), bundleConfigMap, cm)).To(gomega.Succeed())
	return []byte(cm.Data[servingcert.BundleKey])
}

// servedCert is the certificate the endpoint presents now (a new connection).
func servedCert(g gomega.Gomega) *x509.Certificate {
	u, err := url.Parse(endpointURL)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // read, then verified below
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// trustedBy verifies cert for the Service's name against a PEM bundle, as the aggregator does.
func trustedBy(cert *x509.Certificate, bundle []byte) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	_, err := cert.Verify(x509.VerifyOptions{DNSName: serviceName, Roots: roots})
	return err
}

// certsOf parses every certificate of a PEM bundle.
func certsOf(g gomega.Gomega, pemData []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		if block, pemData = pem.Decode(pemData); block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		out = append(out, c)
	}
}

func firstCert(g gomega.Gomega, pemData []byte) *x509.Certificate {
	block, _ := pem.Decode(pemData)
	g.Expect(block).NotTo(gomega.BeNil())
	c, err := x509.ParseCertificate(block.Bytes)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	return c
}

// otherCA is a CA that signed nothing the endpoint serves.
func otherCA(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "someone else"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// kube-apiserver verifies the endpoint's certificate: config/'s APIService carries no
// insecureSkipTLSVerify, the operator injected the bundle it publishes as its caBundle and it
// is Available; the same Service behind an APIService with another CA fails verification (x509),
// and with the injected bundle it does not.
func TestAPIServerVerifiesTheEndpoint(t *testing.T) {
	g := gomega.NewWithT(t)
	svc := apiService(g, servingcert.DefaultAPIService)
	skip, found, _ := unstructured.NestedBool(svc.Object, "spec", "insecureSkipTLSVerify")
	g.Expect(found && skip).To(gomega.BeFalse(), "insecureSkipTLSVerify")
	bundle := publishedBundle(g)
	g.Expect(caBundle(g, svc)).To(gomega.Equal(bundle), "the APIService's caBundle is the published bundle")
	g.Expect(availableStatus(svc)).To(gomega.Equal("True"))
	g.Expect(trustedBy(servedCert(g), bundle)).To(gomega.Succeed())

	port, _, _ := unstructured.NestedInt64(svc.Object, "spec", "service", "port")
	probe := func(version string, ca []byte) {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": version + ".progress.taskops.dev"},
			"spec": map[string]any{"group": "progress.taskops.dev", "version": version, "groupPriorityMinimum": int64(1000),
				"versionPriority": int64(1), "caBundle": base64.StdEncoding.EncodeToString(ca),
				"service": map[string]any{"name": "workflowtask-progress", "namespace": "workflowtask-system", "port": port}},
		}}
		g.Expect(k8sClient.Create(context.Background(), u)).To(gomega.Succeed())
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), u) })
	}
	probe("v1beta1", otherCA(t))
	probe("v1beta2", bundle)
	message := func(name string) func(g gomega.Gomega) string {
		return func(g gomega.Gomega) string {
			status, msg := available(apiService(g, name))
			g.Expect(status).NotTo(gomega.BeEmpty())
			return msg
		}
	}
	g.Eventually(message("v1beta1.progress.taskops.dev")).Should(gomega.ContainSubstring("x509"), "another CA: the certificate is refused")
	g.Eventually(message("v1beta2.progress.taskops.dev")).ShouldNot(gomega.BeEmpty())
	g.Expect(message("v1beta2.progress.taskops.dev")(g)).NotTo(gomega.ContainSubstring("x509"), "the injected bundle: the certificate is accepted")
}

// The operator puts its bundle back when someone changes the APIService's caBundle.
func TestCABundleIsRestored(t *testing.T) {
	g := gomega.NewWithT(t)
	svc := apiService(g, servingcert.DefaultAPIService)
	want := caBundle(g, svc)
	patch := []byte(`{"spec":{"caBundle":"` + base64.StdEncoding.EncodeToString(otherCA(t)) + `"}}`)
	g.Expect(k8sClient.Patch(context.Background(), svc, client.RawPatch("application/merge-patch+json", patch))).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) []byte { return caBundle(g, apiService(g, servingcert.DefaultAPIService)) }).Should(gomega.Equal(want))
	g.Eventually(func(g gomega.Gomega) string { return availableStatus(apiService(g, servingcert.DefaultAPIService)) }).Should(gomega.Equal("True"))
}

// A CA renewal, end to end: the next CA is trusted (injected) while the old one still signs;
// once it has propagated it signs the certificate served; the old CA stays trusted. Requests
// through the aggregator succeed all along, and every certificate served is trusted by the
// APIService's caBundle of that moment.
func TestCertificateRotationKeepsAPIServiceAvailable(t *testing.T) {
	g := gomega.NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := kubernetes.NewForConfig(adminCfg)
	g.Expect(err).NotTo(gomega.HaveOccurred())

	// Through the aggregator, continuously.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := cs.RESTClient().Get().AbsPath("/apis/progress.taskops.dev/v1alpha1").DoRaw(ctx); err != nil && ctx.Err() == nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else if err == nil {
				ok.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	before := caSecretData(g)
	beforeBundle := publishedBundle(g)
	oldCA := firstCert(g, before[servingcert.CACertKey])
	oldServing := servedCert(g)
	g.Expect(oldServing.CheckSignatureFrom(oldCA)).To(gomega.Succeed())

	// The CA falls due: two thirds of its life after it was issued (one hour backdated).
	issued := oldCA.NotBefore.Add(time.Hour)
	certClock.set(time.Until(issued.Add(testCAValidity*2/3 + time.Minute)))
	var next *x509.Certificate
	g.Eventually(func(g gomega.Gomega) {
		data := caSecretData(g)
		g.Expect(data).To(gomega.HaveKey(servingcert.NextCACertKey))
		next = firstCert(g, data[servingcert.NextCACertKey])
		bundle := publishedBundle(g)
		g.Expect(certsOf(g, bundle)).To(gomega.ContainElement(gomega.Satisfy(next.Equal)), "the next CA is published")
		g.Expect(caBundle(g, apiService(g, servingcert.DefaultAPIService))).To(gomega.Equal(bundle))
	}).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		served := servedCert(g)
		g.Expect(served.Equal(oldServing)).To(gomega.BeTrue(), "the next CA signs nothing before it has propagated")
		g.Expect(trustedBy(served, caBundle(g, apiService(g, servingcert.DefaultAPIService)))).To(gomega.Succeed())
	}, 3*time.Second).Should(gomega.Succeed())

	// Propagated: the next CA signs the certificate served; the old CA is still trusted.
	certClock.set(time.Until(issued.Add(testCAValidity*2/3 + 2*time.Minute + testPropagation)))
	g.Eventually(func(g gomega.Gomega) {
		served := servedCert(g)
		g.Expect(served.CheckSignatureFrom(next)).To(gomega.Succeed(), "served by the new CA")
		bundle := caBundle(g, apiService(g, servingcert.DefaultAPIService))
		g.Expect(trustedBy(served, bundle)).To(gomega.Succeed())
		g.Expect(trustedBy(oldServing, bundle)).To(gomega.Succeed(), "the old CA stays trusted")
		g.Expect(publishedBundle(g)).To(gomega.Equal(bundle), "the ConfigMap holds what the APIService trusts")
		g.Expect(firstCert(g, caSecretData(g)[servingcert.CACertKey]).Equal(next)).To(gomega.BeTrue())
	}).Should(gomega.Succeed())
	g.Expect(availableStatus(apiService(g, servingcert.DefaultAPIService))).To(gomega.Equal("True"))

	time.Sleep(time.Second) // a few more requests on the new certificate
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests through the aggregator failed during the renewal; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 20 {
		t.Errorf("only %d requests went through the aggregator during the renewal", ok.Load())
	}
	if !strings.Contains(string(beforeBundle), "CERTIFICATE") {
		t.Error("no bundle was published before the renewal")
	}
}
