package endpoint_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// The serving Secret — what a serving pod reads — holds the serving certificate and its key,
// nothing else; the CA that signed the certificate served, with its key, is in the CA Secret.
func TestServingSecretHoldsNoCAKey(t *testing.T) {
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		data := certSecretData(g)
		g.Expect(slices.Sorted(maps.Keys(data))).To(gomega.Equal([]string{servingcert.CertKey, servingcert.KeyKey}))
		ca := caSecretData(g)
		g.Expect(ca).To(gomega.HaveKey(servingcert.CAKeyKey))
		g.Expect(firstCert(g, data[servingcert.CertKey]).CheckSignatureFrom(firstCert(g, ca[servingcert.CACertKey]))).To(gomega.Succeed())
		g.Expect(servedCert(g).Equal(firstCert(g, data[servingcert.CertKey]))).To(gomega.BeTrue(), "the endpoint serves the Secret's certificate")
	}).Should(gomega.Succeed())
}

// config/split's endpoint cannot reach the CA's key: its identity (config/endpoint's RBAC, a
// real token) may read neither Secret, while the operator's identity reads the CA Secret; and
// what its pods are given from Secrets (volumes, env), read back from the cluster where the
// operator keeps them, is the serving certificate and its key only.
func TestSplitEndpointCannotReachTheCAKey(t *testing.T) {
	ctx := context.Background()
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { g.Expect(certSecretData(g)).To(gomega.HaveKey(servingcert.KeyKey)) }).Should(gomega.Succeed())
	caKeys := caSecretData(g)

	// What the endpoint's pods get from Secrets, as config/split deploys them.
	u := render(t, "split").find("Deployment", "workflowtask-progress-endpoint")
	if u == nil {
		t.Fatal("config/split has no endpoint Deployment")
	}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
		t.Fatal(err)
	}
	given := map[string][]byte{} // secret/key → value
	give := func(name string, keys []string) {
		if name == caSecret.Name {
			t.Errorf("the endpoint's pods are given the CA Secret %s", name)
		}
		data := secretData(g, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: name})
		if keys == nil {
			keys = slices.Collect(maps.Keys(data))
		}
		for _, k := range keys {
			given[name+"/"+k] = data[k]
		}
	}
	itemKeys := func(items []corev1.KeyToPath) []string {
		if len(items) == 0 {
			return nil
		}
		var keys []string
		for _, it := range items {
			keys = append(keys, it.Key)
		}
		return keys
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			give(v.Secret.SecretName, itemKeys(v.Secret.Items))
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					give(src.Secret.Name, itemKeys(src.Secret.Items))
				}
			}
		}
	}
	for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				give(e.ValueFrom.SecretKeyRef.Name, []string{e.ValueFrom.SecretKeyRef.Key})
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				give(e.SecretRef.Name, nil)
			}
		}
	}
	if want := []string{certSecret.Name + "/" + servingcert.CertKey, certSecret.Name + "/" + servingcert.KeyKey}; !slices.Equal(slices.Sorted(maps.Keys(given)), want) {
		t.Errorf("the endpoint's pods are given %v, want %v", slices.Sorted(maps.Keys(given)), want)
	}
	for k, v := range given {
		for _, caKey := range []string{servingcert.CAKeyKey, servingcert.NextCAKeyKey} {
			if len(caKeys[caKey]) > 0 && bytes.Contains(v, caKeys[caKey]) {
				t.Errorf("the endpoint's pods are given the CA's %s as %s", caKey, k)
			}
		}
		if k != certSecret.Name+"/"+servingcert.KeyKey && bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Errorf("the endpoint's pods are given a private key as %s", k)
		}
	}

	// Its identity reads neither Secret; the operator's reads the CA Secret (the RBAC is not
	// vacuous: the Secret exists and holds the key).
	installSplitEndpointRBAC(t)
	token, err := testenv.Token(ctx, adminCfg, testenv.OperatorNamespace, "workflowtask-progress-endpoint")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := kubernetes.NewForConfigOrDie(testenv.BearerConfig(adminCfg, token))
	for _, key := range []types.NamespacedName{caSecret, certSecret} {
		if _, err := endpoint.CoreV1().Secrets(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("the endpoint's identity reading the Secret %s: %v, want Forbidden", key, err)
		}
	}
	operatorCfg, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, testenv.OperatorNamespace, testenv.OperatorServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubernetes.NewForConfigOrDie(operatorCfg).CoreV1().Secrets(caSecret.Namespace).Get(ctx, caSecret.Name, metav1.GetOptions{})
	if err != nil || len(s.Data[servingcert.CAKeyKey]) == 0 {
		t.Errorf("the operator's identity reading the CA Secret: %v (ca.key present: %v)", err, err == nil && len(s.Data[servingcert.CAKeyKey]) > 0)
	}
}

// The published bundle holds exactly the operator's CAs — the next, the signing and the
// retired ones of the CA Secret, in that order — and the APIService trusts exactly those: a
// foreign CA planted in the ConfigMap, the APIService's caBundle, the serving Secret's old
// bundle key (ca-bundle.crt) or the CA Secret's retired CAs is dropped, and the APIService
// stays Available.
func TestCABundleHoldsOnlyOurCAs(t *testing.T) {
	ctx := context.Background()
	g := gomega.NewWithT(t)
	foreign := otherCA(t)
	plant := func(obj client.Object, patch string) {
		t.Helper()
		g.Expect(k8sClient.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))).To(gomega.Succeed())
	}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	current := publishedBundle(g)
	withForeign := append(append([]byte{}, current...), foreign...)
	cmPatch, err := json.Marshal(map[string]any{"data": map[string]string{servingcert.BundleKey: string(withForeign)}})
	g.Expect(err).NotTo(gomega.HaveOccurred())
	plant(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: bundleConfigMap.Namespace, Name: bundleConfigMap.Name}}, string(cmPatch))
	plant(apiService(g, servingcert.DefaultAPIService), `{"spec":{"caBundle":"`+b64(withForeign)+`"}}`)
	plant(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: certSecret.Namespace, Name: certSecret.Name}},
		`{"data":{"ca-bundle.crt":"`+b64(withForeign)+`"}}`)
	retired := caSecretData(g)[servingcert.RetiredCACertKey]
	plant(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: caSecret.Namespace, Name: caSecret.Name}},
		`{"data":{"`+servingcert.RetiredCACertKey+`":"`+b64(append(append([]byte{}, retired...), foreign...))+`"}}`)

	foreignCert := firstCert(g, foreign)
	g.Eventually(func(g gomega.Gomega) {
		trusted := caBundle(g, apiService(g, servingcert.DefaultAPIService))
		g.Expect(certsOf(g, trusted)).NotTo(gomega.ContainElement(gomega.Satisfy(foreignCert.Equal)), "the APIService trusts the foreign CA")
		bundle := publishedBundle(g)
		g.Expect(trusted).To(gomega.Equal(bundle), "the APIService trusts the published bundle")
		ca := caSecretData(g)
		var ours []*x509.Certificate
		for _, k := range []string{servingcert.NextCACertKey, servingcert.CACertKey, servingcert.RetiredCACertKey} {
			ours = append(ours, certsOf(g, ca[k])...)
		}
		g.Expect(ours).NotTo(gomega.ContainElement(gomega.Satisfy(foreignCert.Equal)), "the CA Secret's retired CAs")
		published := certsOf(g, bundle)
		g.Expect(published).To(gomega.HaveLen(len(ours)))
		for i, c := range published {
			g.Expect(c.Equal(ours[i])).To(gomega.BeTrue(), "CA %d of the bundle: %s", i, c.Subject)
			g.Expect(c.Subject.CommonName).To(gomega.HavePrefix("workflowtask-progress-ca@"))
		}
		g.Expect(certSecretData(g)).NotTo(gomega.HaveKey("ca-bundle.crt"), "the old bundle key is removed")
	}).Should(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) string { return availableStatus(apiService(g, servingcert.DefaultAPIService)) }).Should(gomega.Equal("True"))
}

// Any authenticated user — here a fresh ServiceAccount of another namespace, as a web front
// end's — may read the bundle ConfigMap (config/apiserver's reader Role) and verifies the
// endpoint with it; it may read nothing else there: not another ConfigMap, not the CA Secret.
func TestCABundleIsReadableByAuthenticatedUsers(t *testing.T) {
	ctx := context.Background()
	g := gomega.NewWithT(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := readObjects(filepath.Join(root, "config", "apiserver", "ca_bundle_reader_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		testenv.Prefixed(u)
		u.SetNamespace(testenv.OperatorNamespace)
		if err := k8sClient.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cfg, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, "web-frontend", "cloudreve")
	if err != nil {
		t.Fatal(err)
	}
	user := kubernetes.NewForConfigOrDie(cfg)
	var bundle []byte
	g.Eventually(func(g gomega.Gomega) {
		cm, err := user.CoreV1().ConfigMaps(bundleConfigMap.Namespace).Get(ctx, bundleConfigMap.Name, metav1.GetOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		bundle = []byte(cm.Data[servingcert.BundleKey])
	}).Should(gomega.Succeed())
	g.Expect(trustedBy(servedCert(g), bundle)).To(gomega.Succeed(), "the endpoint verifies with the published bundle")

	if _, err := user.CoreV1().ConfigMaps(bundleConfigMap.Namespace).Get(ctx, "another", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading another ConfigMap: %v, want Forbidden", err)
	}
	if _, err := user.CoreV1().ConfigMaps(bundleConfigMap.Namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing ConfigMaps: %v, want Forbidden", err)
	}
	if _, err := user.CoreV1().Secrets(caSecret.Namespace).Get(ctx, caSecret.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading the CA Secret: %v, want Forbidden", err)
	}
}
