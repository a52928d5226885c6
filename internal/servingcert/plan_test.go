package servingcert

import (
	"crypto/x509"
	"encoding/pem"
	"maps"
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
func planned(t *testing.T, o *Options, data map[string][]byte, now time.Time) (map[string][]byte, bool) {
	t.Helper()
	want, changed, err := o.plan(data, now)
	if err != nil {
		t.Fatal(err)
	}
	return want, changed
}

// verifies reports whether the serving certificate in data chains to bundle for every DNS name.
func verifies(o *Options, data map[string][]byte, bundle []byte, now time.Time) bool {
	serving := parseKeyPair(data[CertKey], data[KeyKey])
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
	fresh, changed := planned(t, o, nil, t0)
	if !changed {
		t.Fatal("an empty Secret must be filled")
	}
	caDue := t0.Add(o.CAValidity * 2 / 3)
	rotating, _ := planned(t, o, fresh, caDue)
	rotated, _ := planned(t, o, rotating, caDue.Add(o.Propagation))
	short := testOptions()
	freshShort, _ := planned(t, short, nil, t0)

	tests := []struct {
		name string
		opts *Options // o unless set
		data map[string][]byte
		now  time.Time
		// what is to be kept from data
		keepCA, keepCert, changed bool
		next                      bool // a next CA is pending
		bundle                    int  // CAs in the bundle
	}{
		{name: "fresh certificates stay", data: fresh, now: t0.Add(time.Hour), keepCA: true, keepCert: true, bundle: 1},
		{name: "serving certificate due: renewed by the same CA", opts: short, data: freshShort, now: t0.Add(short.CertValidity * 2 / 3), keepCA: true, changed: true, bundle: 1},
		{name: "CA due: a next CA, trusted but not signing yet", data: fresh, now: caDue, keepCA: true, keepCert: true, changed: true, next: true, bundle: 2},
		{name: "next CA not yet propagated: nothing changes", data: rotating, now: caDue.Add(o.Propagation - time.Second), keepCA: true, keepCert: true, next: true, bundle: 2},
		{name: "next CA propagated: it signs, the certificate is renewed, the old CA still trusted", data: rotating, now: caDue.Add(o.Propagation), changed: true, bundle: 2},
		{name: "old CA expired: dropped from the bundle", data: rotated, now: t0.Add(o.CAValidity), keepCA: true, keepCert: true, changed: true, bundle: 1},
		{name: "extra keys are kept", data: with(fresh, "other", "x"), now: t0, keepCA: true, keepCert: true, bundle: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := o
			if tc.opts != nil {
				o = tc.opts
			}
			got, changed := planned(t, o, tc.data, tc.now)
			if changed != tc.changed {
				t.Errorf("changed = %v, want %v", changed, tc.changed)
			}
			if keep := string(got[CACertKey]) == string(tc.data[CACertKey]); keep != tc.keepCA {
				t.Errorf("CA kept = %v, want %v", keep, tc.keepCA)
			}
			if keep := string(got[CertKey]) == string(tc.data[CertKey]); keep != tc.keepCert {
				t.Errorf("serving certificate kept = %v, want %v", keep, tc.keepCert)
			}
			if n := len(parseCerts(got[BundleKey])); n != tc.bundle {
				t.Errorf("bundle holds %d CAs, want %d: %v", n, tc.bundle, subjects(got[BundleKey]))
			}
			if next := len(got[NextCACertKey]) > 0; next != tc.next {
				t.Errorf("next CA pending = %v, want %v", next, tc.next)
			}
			for _, k := range []string{CACertKey, NextCACertKey} {
				if c := parseCerts(got[k]); len(c) > 0 && !contains(parseCerts(got[BundleKey]), c[0]) {
					t.Errorf("the bundle lacks %s", k)
				}
			}
			if !verifies(o, got, got[BundleKey], tc.now) {
				t.Error("the serving certificate does not chain to the bundle")
			}
			for k, v := range tc.data {
				if _, ours := map[string]bool{CACertKey: true, CAKeyKey: true, NextCACertKey: true, NextCAKeyKey: true, CertKey: true, KeyKey: true, BundleKey: true}[k]; !ours && string(got[k]) != string(v) {
					t.Errorf("key %s was changed", k)
				}
			}
		})
	}
}

func with(data map[string][]byte, k, v string) map[string][]byte {
	out := maps.Clone(data)
	out[k] = []byte(v)
	return out
}

// A Secret anyone edited — garbage, keys that do not match, a certificate for other names,
// a leaf posing as a CA, a huge bundle — is replaced by certificates that work.
func TestPlanHostileSecret(t *testing.T) {
	o := testOptions()
	good, _ := planned(t, o, nil, t0)
	other, _ := planned(t, &Options{DNSNames: []string{"evil.example"}, CAValidity: o.CAValidity, CertValidity: o.CertValidity}, nil, t0)
	var manyCAs []byte
	for i := range 10 {
		d, _ := planned(t, o, nil, t0.Add(time.Duration(i)*time.Second))
		manyCAs = append(manyCAs, d[CACertKey]...)
	}
	block := func(typ, body string) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: []byte(body)}))
	}
	tests := map[string]map[string][]byte{
		"garbage everywhere": {CACertKey: []byte("junk"), CAKeyKey: []byte("junk"), CertKey: []byte("junk"), KeyKey: []byte("junk"), BundleKey: []byte("junk")},
		"PEM blocks that do not parse": {CACertKey: []byte(block("CERTIFICATE", "x")), CAKeyKey: []byte(block("PRIVATE KEY", "x")),
			CertKey: []byte(block("CERTIFICATE", "y")), KeyKey: []byte(block("EC PRIVATE KEY", "y"))},
		"keys swapped":                            with(with(good, CAKeyKey, string(good[KeyKey])), KeyKey, string(good[CAKeyKey])),
		"a certificate for other names":           with(with(good, CertKey, string(other[CertKey])), KeyKey, string(other[KeyKey])),
		"a leaf posing as the CA":                 with(with(good, CACertKey, string(good[CertKey])), CAKeyKey, string(good[KeyKey])),
		"a CA with a certificate it did not sign": with(with(good, CACertKey, string(other[CACertKey])), CAKeyKey, string(other[CAKeyKey])),
		"ten CAs in the bundle":                   with(good, BundleKey, string(manyCAs)),
		"an unknown key type":                     with(good, KeyKey, block("DSA PRIVATE KEY", "x")),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			got, changed := planned(t, o, data, t0.Add(time.Hour))
			if !changed {
				t.Fatal("nothing changed")
			}
			if !verifies(o, got, got[BundleKey], t0.Add(time.Hour)) {
				t.Fatal("the serving certificate does not chain to the bundle")
			}
			if n := len(parseCerts(got[BundleKey])); n > maxBundled {
				t.Errorf("bundle holds %d CAs, at most %d", n, maxBundled)
			}
			for _, c := range parseCerts(got[BundleKey]) {
				if !c.IsCA {
					t.Errorf("bundle holds a non-CA: %s", c.Subject)
				}
			}
			again, changed := planned(t, o, got, t0.Add(time.Hour))
			if changed {
				t.Errorf("not stable: %s", cmp.Diff(got, again))
			}
		})
	}
}

// Over three CA lifetimes, checked every six hours: the certificate served always chains to
// the bundle, and a newly served certificate chains to the bundle as it was Propagation
// earlier (what every kube-apiserver has by then) — no moment at which the aggregator would
// refuse the endpoint.
func TestPlanRotationNeverBreaksTrust(t *testing.T) {
	o := testOptions()
	o.Propagation = 12 * time.Hour
	type state struct {
		at     time.Time
		bundle []byte
	}
	data, _ := planned(t, o, nil, t0)
	history := []state{{t0, data[BundleKey]}}
	cas, certs := map[string]bool{}, map[string]bool{}
	for now := t0; now.Before(t0.Add(3 * o.CAValidity)); now = now.Add(6 * time.Hour) {
		next, _ := planned(t, o, data, now)
		if !verifies(o, next, next[BundleKey], now) {
			t.Fatalf("%s: the serving certificate does not chain to the bundle", now)
		}
		if string(next[CertKey]) != string(data[CertKey]) {
			var old []byte // the bundle injected at least Propagation ago
			for _, s := range history {
				if !s.at.After(now.Add(-o.Propagation)) {
					old = s.bundle
				}
			}
			if !verifies(o, next, old, now) {
				t.Fatalf("%s: a new serving certificate that the bundle of %s does not trust", now, o.Propagation)
			}
		}
		data = next
		history = append(history, state{now, data[BundleKey]})
		cas[string(data[CACertKey])], certs[string(data[CertKey])] = true, true
	}
	if len(cas) < 3 || len(certs) < 9 {
		t.Errorf("%d CAs and %d serving certificates in three CA lifetimes: renewal did not happen", len(cas), len(certs))
	}
}

func TestNextRound(t *testing.T) {
	o := testOptions()
	o.Interval = time.Minute
	r := &Rotator{opts: o}
	data, _ := planned(t, o, nil, t0)
	if got := r.next(data, t0.Add(time.Hour)); got != time.Minute {
		t.Errorf("next round in %v, want the interval", got)
	}
	ca := parseCerts(data[CACertKey])[0]
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
	data, _ := planned(t, o, nil, t0)
	ca, serving := parseCerts(data[CACertKey])[0], parseCerts(data[CertKey])[0]
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA %v, MaxPathLen %d, KeyUsage %v", ca.IsCA, ca.MaxPathLen, ca.KeyUsage)
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
