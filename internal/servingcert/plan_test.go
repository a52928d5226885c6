package servingcert

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func testOptions() *Options {
	return &Options{
		DNSNames:     []string{"workflowtask-progress.workflowtask-system.svc", "localhost"},
		CAValidity:   30 * 24 * time.Hour,
		CertValidity: 10 * 24 * time.Hour,
		Propagation:  time.Minute,
	}
}

// planned runs plan and fails the test on error.
func planned(t *testing.T, o *Options, in secrets, now time.Time) (secrets, []byte) {
	t.Helper()
	out, bundle, err := o.plan(in, now)
	if err != nil {
		t.Fatal(err)
	}
	return out, encodeCerts(bundle)
}

func changed(in, out secrets) bool {
	return !maps.EqualFunc(in.ca, out.ca, bytes.Equal) || !maps.EqualFunc(in.serving, out.serving, bytes.Equal)
}

// verifies reports whether the serving certificate in data chains to bundle for every DNS name.
func verifies(o *Options, data secrets, bundle []byte, now time.Time) bool {
	serving := parseKeyPair(data.serving[CertKey], data.serving[KeyKey])
	return serving != nil && o.validFor(serving.cert, parseCerts(bundle), now)
}

func subjects(pemData []byte) []string {
	var out []string
	for _, c := range parseCerts(pemData) {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestPlan(t *testing.T) {
	o := testOptions()
	o.CertValidity = 60 * 24 * time.Hour // outlives the CA: only the CA falls due at caDue
	fresh, bundle := planned(t, o, secrets{}, t0)
	if len(bundle) == 0 {
		t.Fatal("an empty Secret must be filled")
	}
	caDue := t0.Add(o.CAValidity * 2 / 3)
	rotating, _ := planned(t, o, fresh, caDue)
	rotated, _ := planned(t, o, rotating, caDue.Add(o.Propagation))
	short := testOptions()
	freshShort, _ := planned(t, short, secrets{}, t0)

	tests := []struct {
		name string
		opts *Options // o unless set
		data secrets
		now  time.Time
		// what is to be kept from data
		keepCA, keepCert, changed bool
		next                      bool // a next CA is pending
		retired                   int  // retired CAs still trusted
		bundle                    int  // CAs in the bundle
	}{
		{name: "fresh certificates stay", data: fresh, now: t0.Add(time.Hour), keepCA: true, keepCert: true, bundle: 1},
		{name: "serving certificate due: renewed by the same CA", opts: short, data: freshShort, now: t0.Add(short.CertValidity * 2 / 3), keepCA: true, changed: true, bundle: 1},
		{name: "CA due: a next CA, trusted but not signing yet", data: fresh, now: caDue, keepCA: true, keepCert: true, changed: true, next: true, bundle: 2},
		{name: "next CA not yet propagated: nothing changes", data: rotating, now: caDue.Add(o.Propagation - time.Second), keepCA: true, keepCert: true, next: true, bundle: 2},
		{name: "next CA propagated: it signs, the certificate is renewed, the old CA retired and still trusted", data: rotating, now: caDue.Add(o.Propagation), changed: true, retired: 1, bundle: 2},
		{name: "retired CA expired: dropped from the bundle", data: rotated, now: t0.Add(o.CAValidity), keepCA: true, keepCert: true, changed: true, bundle: 1},
		{name: "extra keys are kept", data: secrets{ca: with(fresh.ca, "other", "x"), serving: with(fresh.serving, "other", "y")}, now: t0, keepCA: true, keepCert: true, bundle: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			if tc.opts != nil {
				o = tc.opts
			}
			got, bundle := planned(t, o, tc.data, tc.now)
			if c := changed(tc.data, got); c != tc.changed {
				t.Errorf("changed = %v, want %v", c, tc.changed)
			}
			if keep := string(got.ca[CACertKey]) == string(tc.data.ca[CACertKey]); keep != tc.keepCA {
				t.Errorf("CA kept = %v, want %v", keep, tc.keepCA)
			}
			if keep := string(got.serving[CertKey]) == string(tc.data.serving[CertKey]); keep != tc.keepCert {
				t.Errorf("serving certificate kept = %v, want %v", keep, tc.keepCert)
			}
			if n := len(parseCerts(bundle)); n != tc.bundle {
				t.Errorf("bundle holds %d CAs, want %d: %v", n, tc.bundle, subjects(bundle))
			}
			if n := len(parseCerts(got.ca[RetiredCACertKey])); n != tc.retired {
				t.Errorf("%d retired CAs, want %d", n, tc.retired)
			}
			if next := len(got.ca[NextCACertKey]) > 0; next != tc.next {
				t.Errorf("next CA pending = %v, want %v", next, tc.next)
			}
			for _, k := range []string{CACertKey, NextCACertKey} {
				if c := parseCerts(got.ca[k]); len(c) > 0 && !contains(parseCerts(bundle), c[0]) {
					t.Errorf("the bundle lacks %s", k)
				}
			}
			if !verifies(o, got, bundle, tc.now) {
				t.Error("the serving certificate does not chain to the bundle")
			}
			for k, v := range tc.data.ca {
				if _, ours := map[string]bool{CACertKey: true, CAKeyKey: true, NextCACertKey: true, NextCAKeyKey: true, RetiredCACertKey: true}[k]; !ours && string(got.ca[k]) != string(v) {
					t.Errorf("CA Secret key %s was changed", k)
				}
			}
			for k, v := range tc.data.serving {
				if k != CertKey && k != KeyKey && string(got.serving[k]) != string(v) {
					t.Errorf("serving Secret key %s was changed", k)
				}
			}
			servingOnly(t, got)
		})
	}
}

// servingOnly fails the test unless the serving Secret's only private key is the serving
// certificate's and it holds no CA key, no CA certificate and no bundle: a pod that reads it
// can serve, nothing more.
func servingOnly(t *testing.T, data secrets) {
	t.Helper()
	for _, k := range []string{legacyCACertKey, legacyCAKeyKey, legacyNextCACertKey, legacyNextCAKeyKey, legacyBundleKey} {
		if _, ok := data.serving[k]; ok {
			t.Errorf("the serving Secret holds %s", k)
		}
	}
	for k, v := range data.serving {
		if k != KeyKey && bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Errorf("the serving Secret holds a private key under %s", k)
		}
	}
	if parseKeyPair(data.serving[CertKey], data.serving[KeyKey]) == nil {
		t.Error("the serving Secret's tls.key is not tls.crt's")
	}
	if parseKeyPair(data.ca[CACertKey], data.ca[CAKeyKey]) == nil {
		t.Error("the CA Secret holds no CA with its key")
	}
}

func with(data map[string][]byte, k, v string) map[string][]byte {
	out := maps.Clone(data)
	out[k] = []byte(v)
	return out
}

// Secrets anyone edited — garbage, keys that do not match, a certificate for other names, a
// leaf posing as a CA, a huge retired list — are replaced by certificates that work.
func TestPlanHostileSecret(t *testing.T) {
	o := testOptions()
	good, _ := planned(t, o, secrets{}, t0)
	other, _ := planned(t, &Options{DNSNames: []string{"evil.example"}, CAValidity: o.CAValidity, CertValidity: o.CertValidity}, secrets{}, t0)
	var manyCAs []byte
	for i := range 10 {
		d, _ := planned(t, o, secrets{}, t0.Add(time.Duration(i)*time.Second))
		manyCAs = append(manyCAs, d.ca[CACertKey]...)
	}
	block := func(typ, body string) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: []byte(body)}))
	}
	junk := []byte("junk")
	tests := map[string]secrets{
		"garbage everywhere": {ca: map[string][]byte{CACertKey: junk, CAKeyKey: junk, NextCACertKey: junk, RetiredCACertKey: junk},
			serving: map[string][]byte{CertKey: junk, KeyKey: junk}},
		"PEM blocks that do not parse": {ca: map[string][]byte{CACertKey: []byte(block("CERTIFICATE", "x")), CAKeyKey: []byte(block("PRIVATE KEY", "x"))},
			serving: map[string][]byte{CertKey: []byte(block("CERTIFICATE", "y")), KeyKey: []byte(block("EC PRIVATE KEY", "y"))}},
		"keys swapped":                  {ca: with(good.ca, CAKeyKey, string(good.serving[KeyKey])), serving: with(good.serving, KeyKey, string(good.ca[CAKeyKey]))},
		"a certificate for other names": {ca: good.ca, serving: with(with(good.serving, CertKey, string(other.serving[CertKey])), KeyKey, string(other.serving[KeyKey]))},
		"a leaf posing as the CA":       {ca: with(with(good.ca, CACertKey, string(good.serving[CertKey])), CAKeyKey, string(good.serving[KeyKey])), serving: good.serving},
		"a CA with a certificate it did not sign": {ca: with(with(good.ca, CACertKey, string(other.ca[CACertKey])), CAKeyKey, string(other.ca[CAKeyKey])),
			serving: good.serving},
		"ten retired CAs":     {ca: with(good.ca, RetiredCACertKey, string(manyCAs)), serving: good.serving},
		"an unknown key type": {ca: good.ca, serving: with(good.serving, KeyKey, block("DSA PRIVATE KEY", "x"))},
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			got, bundle := planned(t, o, data, t0.Add(time.Hour))
			if !changed(data, got) {
				t.Fatal("nothing changed")
			}
			if !verifies(o, got, bundle, t0.Add(time.Hour)) {
				t.Fatal("the serving certificate does not chain to the bundle")
			}
			if n := len(parseCerts(bundle)); n > maxBundled {
				t.Errorf("bundle holds %d CAs, at most %d", n, maxBundled)
			}
			for _, c := range parseCerts(bundle) {
				if !c.IsCA {
					t.Errorf("bundle holds a non-CA: %s", c.Subject)
				}
			}
			servingOnly(t, got)
			again, _ := planned(t, o, got, t0.Add(time.Hour))
			if changed(got, again) {
				t.Errorf("not stable: %s", cmp.Diff(got, again, cmp.AllowUnexported(secrets{})))
			}
		})
	}
}

// foreignCA is a self-signed CA this package did not make; name is its common name.
func foreignCA(t *testing.T, name string) *keyPair {
	t.Helper()
	p, err := sign(&x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The bundle holds the operator's own CAs only: a CA pasted into the retired list, into the
// old bundle an upgrade adopts from, or posing under the operator's CA name but signed by
// another, is dropped; so is anything in the old bundle key once the CA Secret holds a CA (it
// is never read back, even a self-signed CA under the operator's name); the operator's own
// retired CA stays.
func TestPlanDropsForeignCAs(t *testing.T) {
	o, caDue, _, _, rotated := throughARenewal(t)
	own := parseCerts(rotated.ca[RetiredCACertKey])
	if len(own) != 1 {
		t.Fatalf("%d retired CAs after a renewal, want 1", len(own))
	}

	someone := foreignCA(t, "someone else")
	// Named like the operator's CAs, but signed by someone else's key.
	imposter, err := sign(&x509.Certificate{Subject: pkix.Name{CommonName: caNamePrefix + "1"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}, someone)
	if err != nil {
		t.Fatal(err)
	}
	planted := string(someone.certPEM) + string(imposter.certPEM)
	// Self-signed under the operator's CA name: told apart only by where it is found.
	mimic := foreignCA(t, caNamePrefix+"2")
	legacy := legacyLayout(rotated)
	tests := map[string]struct {
		data secrets
		want []*x509.Certificate // the bundle, in order
	}{
		"retired list": {
			data: secrets{ca: with(rotated.ca, RetiredCACertKey, string(rotated.ca[RetiredCACertKey])+planted), serving: rotated.serving},
			want: []*x509.Certificate{parseCerts(rotated.ca[CACertKey])[0], own[0]},
		},
		"the old bundle, adopted on upgrade": {
			data: secrets{serving: with(legacy, legacyBundleKey, string(legacy[legacyBundleKey])+planted)},
			want: []*x509.Certificate{parseCerts(rotated.ca[CACertKey])[0], own[0]},
		},
		"the old bundle, left behind in the serving Secret after the upgrade (never read back)": {
			data: secrets{ca: rotated.ca, serving: with(rotated.serving, legacyBundleKey, planted+string(mimic.certPEM))},
			want: []*x509.Certificate{parseCerts(rotated.ca[CACertKey])[0], own[0]},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			now := caDue.Add(o.Propagation + time.Hour)
			got, bundle := planned(t, o, tc.data, now)
			if diff := cmp.Diff(subjectsOf(tc.want), subjects(bundle)); diff != "" || !slices.EqualFunc(tc.want, parseCerts(bundle), (*x509.Certificate).Equal) {
				t.Errorf("bundle (-want +got):\n%s", diff)
			}
			if bytes.Contains(got.ca[RetiredCACertKey], someone.certPEM) || bytes.Contains(got.ca[RetiredCACertKey], imposter.certPEM) ||
				bytes.Contains(got.ca[RetiredCACertKey], mimic.certPEM) {
				t.Error("a foreign CA is kept as retired")
			}
			servingOnly(t, got)
		})
	}
}

func subjectsOf(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// legacyLayout is data as the serving Secret held it before the CA moved out: the CA, the next
// CA, the serving certificate and the bundle in one Secret.
// throughARenewal is the Secrets at issue (fresh), once the renewed CA is trusted (rotating)
// and once it signs (rotated), with certificates of 60 days; the options used and when the CA
// fell due.
func throughARenewal(t *testing.T) (o *Options, caDue time.Time, fresh, rotating, rotated secrets) {
	t.Helper()
	o = testOptions()
	o.CertValidity = 60 * 24 * time.Hour
	fresh, _ = planned(t, o, secrets{}, t0)
	caDue = t0.Add(o.CAValidity * 2 / 3)
	rotating, _ = planned(t, o, fresh, caDue)
	rotated, _ = planned(t, o, rotating, caDue.Add(o.Propagation))
	return o, caDue, fresh, rotating, rotated
}

func legacyLayout(data secrets) map[string][]byte {
	out := map[string][]byte{
		legacyCACertKey: data.ca[CACertKey], legacyCAKeyKey: data.ca[CAKeyKey],
		CertKey: data.serving[CertKey], KeyKey: data.serving[KeyKey],
		legacyBundleKey: append(append(bytes.Clone(data.ca[NextCACertKey]), data.ca[CACertKey]...), data.ca[RetiredCACertKey]...),
	}
	if len(data.ca[NextCACertKey]) > 0 {
		out[legacyNextCACertKey], out[legacyNextCAKeyKey] = data.ca[NextCACertKey], data.ca[NextCAKeyKey]
	}
	return out
}

// An upgrade from the one-Secret layout, at any point of a renewal, adopts the CA it held: the
// served certificate, the signing and next CA and the operator's retired CAs stay, and the keys
// leave the serving Secret — nothing served that the injected bundle did not trust.
func TestPlanAdoptsTheCAOfTheOldLayout(t *testing.T) {
	o, caDue, fresh, rotating, rotated := throughARenewal(t)
	for name, tc := range map[string]struct {
		data secrets
		now  time.Time
	}{
		"steady":                  {fresh, t0.Add(time.Hour)},
		"next CA not yet signing": {rotating, caDue.Add(time.Second)},
		"just after a renewal":    {rotated, caDue.Add(o.Propagation + time.Second)},
	} {
		t.Run(name, func(t *testing.T) {
			in := secrets{ca: map[string][]byte{}, serving: legacyLayout(tc.data)} // the CA Secret as config/ ships it
			got, bundle := planned(t, o, in, tc.now)
			want := tc.data
			for _, k := range []string{CACertKey, CAKeyKey, NextCACertKey, NextCAKeyKey, RetiredCACertKey} {
				if !bytes.Equal(got.ca[k], want.ca[k]) {
					t.Errorf("CA Secret's %s: not the old layout's", k)
				}
			}
			if !bytes.Equal(got.serving[CertKey], want.serving[CertKey]) {
				t.Error("the served certificate changed")
			}
			if !slices.EqualFunc(parseCerts(bundle), parseCerts(in.serving[legacyBundleKey]), (*x509.Certificate).Equal) {
				t.Errorf("bundle %v, the old one %v", subjects(bundle), subjects(in.serving[legacyBundleKey]))
			}
			servingOnly(t, got)
			if again, _ := planned(t, o, got, tc.now); changed(got, again) {
				t.Error("not stable after the move")
			}
		})
	}
}

// The serving certificate is also for the metrics Service's names: the metrics listener serves
// it. A certificate without them (issued before) is renewed by the same CA.
func TestPlanCoversTheMetricsService(t *testing.T) {
	o := testOptions()
	before, _ := planned(t, o, secrets{}, t0)
	o.MetricsDNSNames = ServiceDNSNames(DefaultMetricsService, "workflowtask-system")
	got, bundle := planned(t, o, before, t0.Add(time.Hour))
	if bytes.Equal(got.serving[CertKey], before.serving[CertKey]) || !bytes.Equal(got.ca[CACertKey], before.ca[CACertKey]) {
		t.Error("want a new serving certificate from the same CA")
	}
	serving := parseCerts(got.serving[CertKey])[0]
	for _, name := range []string{"workflowtask-progress.workflowtask-system.svc", "workflowtask-controller-manager-metrics-service.workflowtask-system.svc",
		"workflowtask-controller-manager-metrics-service.workflowtask-system.svc.cluster.local"} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: name, Roots: pool(parseCerts(bundle)...), CurrentTime: t0.Add(time.Hour)}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Over three CA lifetimes, checked every six hours: the certificate served always chains to
// the bundle, and a newly served certificate chains to the bundle as it was Propagation
// earlier (what every kube-apiserver has by then) — no moment at which the aggregator would
// refuse the endpoint; a certificate served before a renewal stays trusted until its CA
// (or it) expires; the bundle never holds a CA the CA Secret does not.
func TestPlanRotationNeverBreaksTrust(t *testing.T) {
	o := testOptions()
	o.Propagation = 12 * time.Hour
	type state struct {
		at     time.Time
		bundle []byte
	}
	data, bundle := planned(t, o, secrets{}, t0)
	history := []state{{t0, bundle}}
	cas, certs := map[string]bool{}, map[string]bool{}
	served := []secrets{data}
	for now := t0; now.Before(t0.Add(3 * o.CAValidity)); now = now.Add(6 * time.Hour) {
		next, bundle := planned(t, o, data, now)
		if !verifies(o, next, bundle, now) {
			t.Fatalf("%s: the serving certificate does not chain to the bundle", now)
		}
		if string(next.serving[CertKey]) != string(data.serving[CertKey]) {
			var old []byte // the bundle injected at least Propagation ago
			for _, s := range history {
				if !s.at.After(now.Add(-o.Propagation)) {
					old = s.bundle
				}
			}
			if !verifies(o, next, old, now) {
				t.Fatalf("%s: a new serving certificate that the bundle of %s does not trust", now, o.Propagation)
			}
			served = append(served, next)
		}
		for _, s := range served { // every certificate once served, while it and its CA are valid
			ca, cert := parseCerts(s.ca[CACertKey])[0], parseCerts(s.serving[CertKey])[0]
			if now.Before(ca.NotAfter) && now.Before(cert.NotAfter) && !verifies(o, s, bundle, now) {
				t.Fatalf("%s: a certificate served before is no longer trusted while its CA is valid", now)
			}
		}
		for _, c := range parseCerts(bundle) {
			if !contains(slices.Concat(parseCerts(next.ca[CACertKey]), parseCerts(next.ca[NextCACertKey]), parseCerts(next.ca[RetiredCACertKey])), c) {
				t.Fatalf("%s: the bundle holds %s, which the CA Secret does not", now, c.Subject)
			}
		}
		servingOnly(t, next)
		data = next
		history = append(history, state{now, bundle})
		cas[string(data.ca[CACertKey])], certs[string(data.serving[CertKey])] = true, true
	}
	if len(cas) < 3 || len(certs) < 9 {
		t.Errorf("%d CAs and %d serving certificates in three CA lifetimes: renewal did not happen", len(cas), len(certs))
	}
}

func TestNextRound(t *testing.T) {
	o := testOptions()
	o.Interval = time.Minute
	r := &Rotator{opts: o}
	data, _ := planned(t, o, secrets{}, t0)
	if got := r.next(data, t0.Add(time.Hour)); got != time.Minute {
		t.Errorf("next round in %v, want the interval", got)
	}
	ca := parseCerts(data.ca[CACertKey])[0]
	if got := r.next(data, renewAt(ca).Add(-10*time.Second)); got != 10*time.Second {
		t.Errorf("next round in %v, want when the CA falls due (10s)", got)
	}
	rotating, _ := planned(t, o, data, renewAt(ca))
	if got := r.next(rotating, renewAt(ca).Add(o.Propagation-2*time.Second)); got != 2*time.Second {
		t.Errorf("next round in %v, want when the next CA has propagated (2s)", got)
	}
}

// x509 keeps its verdict on the certificates the plan writes: a CA that may sign, a serving
// certificate for the server only.
func TestIssuedCertificates(t *testing.T) {
	o := testOptions()
	data, _ := planned(t, o, secrets{}, t0)
	ca, serving := parseCerts(data.ca[CACertKey])[0], parseCerts(data.serving[CertKey])[0]
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 || !ours(ca) {
		t.Errorf("CA: IsCA %v, MaxPathLen %d, KeyUsage %v, ours %v", ca.IsCA, ca.MaxPathLen, ca.KeyUsage, ours(ca))
	}
	if serving.IsCA || !cmp.Equal(serving.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || !cmp.Equal(serving.DNSNames, o.DNSNames) {
		t.Errorf("serving: IsCA %v, ExtKeyUsage %v, DNSNames %v", serving.IsCA, serving.ExtKeyUsage, serving.DNSNames)
	}
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool(ca), CurrentTime: t0}); err == nil {
		t.Error("the serving certificate is valid for a name it was not issued for")
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
