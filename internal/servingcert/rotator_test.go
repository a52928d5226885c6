package servingcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const testNS = "workflowtask-system"

// rotatorOptions are testOptions with the default object names in testNS, no APIService (the
// envtest suite covers injection), at t0.
func rotatorOptions() *Options {
	o := testOptions()
	o.Secret = types.NamespacedName{Namespace: testNS, Name: DefaultSecretName}
	o.CASecretName, o.BundleConfigMap = DefaultCASecretName, DefaultBundleConfigMap
	o.Manage, o.Interval, o.Clock = true, time.Minute, clocktesting.NewFakePassiveClock(t0)
	return o
}

func secretObj(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name}, Data: data}
}

func bundleObj(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: DefaultBundleConfigMap}, Data: data}
}

// fakeRotator is a Rotator on a fake API holding objs; writes lists the objects it updated, in
// order, as kind/name.
func fakeRotator(o *Options, objs ...client.Object) (r *Rotator, c client.Client, writes *[]string) {
	writes = new([]string)
	c = fake.NewClientBuilder().WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			kind := "Secret"
			if _, ok := obj.(*corev1.ConfigMap); ok {
				kind = "ConfigMap"
			}
			*writes = append(*writes, kind+"/"+obj.GetName())
			return c.Update(ctx, obj, opts...)
		},
	}).Build()
	return &Rotator{opts: o, reader: c, writer: c}, c, writes
}

func getSecret(t *testing.T, c client.Client, name string) map[string][]byte {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s.Data
}

func getBundle(t *testing.T, c client.Client) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: testNS, Name: DefaultBundleConfigMap}, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

// One round on the Secrets and ConfigMap config/ ships: the CA and its key go to the CA Secret,
// the serving Secret gets tls.crt and tls.key only, and the ConfigMap exactly the CA — a
// foreign CA and a key planted there are gone, and stay gone. The CA Secret and the ConfigMap
// are written before the serving Secret: a certificate is served only once its CA is published.
func TestRotatorSync(t *testing.T) {
	o := rotatorOptions()
	foreign := foreignCA(t, "someone else")
	r, c, writes := fakeRotator(o, secretObj(DefaultCASecretName, nil), secretObj(DefaultSecretName, nil),
		bundleObj(map[string]string{BundleKey: string(foreign.certPEM), "extra.crt": string(foreign.certPEM)}))
	ctx := context.Background()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"Secret/" + DefaultCASecretName, "ConfigMap/" + DefaultBundleConfigMap, "Secret/" + DefaultSecretName}; !slices.Equal(*writes, want) {
		t.Errorf("writes %v, want %v", *writes, want)
	}
	got := secrets{ca: getSecret(t, c, DefaultCASecretName), serving: getSecret(t, c, DefaultSecretName)}
	servingOnly(t, got)
	if keys := slices.Sorted(maps.Keys(got.serving)); !slices.Equal(keys, []string{CertKey, KeyKey}) {
		t.Errorf("the serving Secret holds %v", keys)
	}
	cm := getBundle(t, c)
	if diff := cmp.Diff(map[string]string{BundleKey: string(got.ca[CACertKey])}, cm.Data); diff != "" {
		t.Errorf("ConfigMap data (-want +got):\n%s", diff)
	}

	// Planted again: restored at the next round, nothing else written.
	cm.Data[BundleKey] += string(foreign.certPEM)
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	*writes = nil
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := getBundle(t, c).Data[BundleKey]; got != string(getSecret(t, c, DefaultCASecretName)[CACertKey]) {
		t.Errorf("the ConfigMap holds %v", subjects([]byte(got)))
	}
	if want := []string{"ConfigMap/" + DefaultBundleConfigMap}; !slices.Equal(*writes, want) {
		t.Errorf("writes %v, want %v", *writes, want)
	}
}

// A Secret of the old layout (the CA in the serving Secret) is moved: the CA Secret gets its
// CA, the serving Secret keeps its certificate and loses the CA's keys, the bundle is the same.
func TestRotatorMovesTheCAOutOfTheServingSecret(t *testing.T) {
	o := rotatorOptions()
	before, bundle := planned(t, o, secrets{}, t0)
	r, c, _ := fakeRotator(o, secretObj(DefaultCASecretName, nil), secretObj(DefaultSecretName, legacyLayout(before)), bundleObj(nil))
	if _, err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := secrets{ca: getSecret(t, c, DefaultCASecretName), serving: getSecret(t, c, DefaultSecretName)}
	servingOnly(t, got)
	if string(got.ca[CAKeyKey]) != string(before.ca[CAKeyKey]) || string(got.serving[CertKey]) != string(before.serving[CertKey]) {
		t.Error("the CA or the served certificate changed in the move")
	}
	if got := getBundle(t, c).Data[BundleKey]; got != string(bundle) {
		t.Errorf("bundle %v, want %v", subjects([]byte(got)), subjects(bundle))
	}
}

// What the Rotator needs and does not find is named with the command that makes it.
func TestRotatorMissingObjects(t *testing.T) {
	o := rotatorOptions()
	for name, tc := range map[string]struct {
		objs []client.Object
		want string
	}{
		"CA Secret": {[]client.Object{secretObj(DefaultSecretName, nil), bundleObj(nil)}, "kubectl create secret generic " + DefaultCASecretName},
		"ConfigMap": {[]client.Object{secretObj(DefaultSecretName, nil), secretObj(DefaultCASecretName, nil)}, "kubectl create configmap " + DefaultBundleConfigMap},
	} {
		t.Run(name, func(t *testing.T) {
			r, c, _ := fakeRotator(o, tc.objs...)
			_, err := r.Sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
			if data := getSecret(t, c, DefaultSecretName); len(data) != 0 {
				t.Error("a serving certificate was written before its CA was published")
			}
		})
	}
}

// With cert-manager keeping the certificate, the Rotator only publishes the CA that issued it
// (the serving Secret's ca.crt), nothing foreign beside it, and nothing before it is issued.
func TestRotatorPublishesCertManagersCA(t *testing.T) {
	o := rotatorOptions()
	o.Manage = false
	issued, _ := planned(t, testOptions(), secrets{}, t0)
	foreign := foreignCA(t, "someone else")
	cmSecret := map[string][]byte{CertKey: issued.serving[CertKey], KeyKey: issued.serving[KeyKey],
		issuerCACertKey: append(append([]byte{}, foreign.certPEM...), issued.ca[CACertKey]...)}

	r, _, writes := fakeRotator(o, secretObj(DefaultSecretName, nil), bundleObj(nil))
	if _, err := r.Sync(context.Background()); err != nil || len(*writes) != 0 {
		t.Fatalf("nothing issued yet: error %v, writes %v", err, *writes)
	}
	r, c, writes := fakeRotator(o, secretObj(DefaultSecretName, cmSecret), bundleObj(map[string]string{BundleKey: string(foreign.certPEM)}))
	if _, err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := getBundle(t, c).Data[BundleKey]; got != string(issued.ca[CACertKey]) {
		t.Errorf("published %v, want the issuing CA only", subjects([]byte(got)))
	}
	if want := []string{"ConfigMap/" + DefaultBundleConfigMap}; !slices.Equal(*writes, want) {
		t.Errorf("writes %v, want only the ConfigMap (cert-manager keeps the Secret)", *writes)
	}
}

// One Source serves two listeners (the progress endpoint and the metrics server) the same
// certificate, and both the renewed one as soon as it is loaded.
func TestSourceServesTwoListeners(t *testing.T) {
	o := rotatorOptions()
	o.MetricsDNSNames = ServiceDNSNames(DefaultMetricsService, testNS)
	first, _ := planned(t, o, secrets{}, t0)
	c := fake.NewClientBuilder().WithObjects(secretObj(DefaultSecretName, first.serving)).Build()
	src := &Source{opts: o, reader: c, reload: make(chan struct{}, 1)}
	ctx := context.Background()
	if err := src.load(ctx); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for range 2 {
		cfg := &tls.Config{Certificates: []tls.Certificate{{}}} // as a server with a default certificate would have
		src.ConfigureTLS(cfg)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		urls = append(urls, ln.Addr().String())
	}
	served := func(addr, serverName string) *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: serverName}) //nolint:gosec // read, compared below
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	want := parseCerts(first.serving[CertKey])[0]
	for _, addr := range urls {
		for _, sni := range []string{"", o.MetricsDNSNames[0]} {
			if !served(addr, sni).Equal(want) {
				t.Errorf("%s (SNI %q) serves another certificate", addr, sni)
			}
		}
	}

	renewed, _ := planned(t, o, first, t0.Add(o.CertValidity*2/3))
	s := &corev1.Secret{}
	if err := c.Get(ctx, o.Secret, s); err != nil {
		t.Fatal(err)
	}
	s.Data = renewed.serving
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := src.load(ctx); err != nil {
		t.Fatal(err)
	}
	want = parseCerts(renewed.serving[CertKey])[0]
	for _, addr := range urls {
		if !served(addr, "").Equal(want) {
			t.Errorf("%s still serves the old certificate", addr)
		}
	}
}
