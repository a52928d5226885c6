package servingcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"
)

// keyPair is a certificate with its key.
type keyPair struct {
	cert            *x509.Certificate
	certPEM, keyPEM []byte
	key             crypto.Signer
}

// secrets are the data of the two Secrets the plan reads and writes.
type secrets struct {
	ca      map[string][]byte // the CA Secret's: the operator's alone
	serving map[string][]byte // the serving Secret's: what serving pods may read
}

// caNamePrefix starts the common name of every CA this package makes.
const caNamePrefix = "workflowtask-progress-ca@"

// plan returns the Secrets' data wanted at now and the CA bundle.
//
// The CA that signs (ca.crt) is renewed in two steps: when a third of its life is left a next
// CA (ca-next.crt) is made and added to the bundle; once it has been there for Propagation it
// becomes the signing CA, the old one is retired (ca-retired.crt, trusted until it expires),
// and the serving certificate is signed by the new one. The serving certificate is renewed
// when a third of its life is left, when it is not valid for the DNS names, or when the
// signing CA did not sign it. Whatever does not parse (an edited Secret) is replaced.
//
// The bundle is the next, the signing and the retired CAs still valid, read from the CA Secret
// alone: nothing published (the ConfigMap, the APIService, the serving Secret) is read back, so
// a CA planted there never enters it. Retired CAs count only if they are the operator's own
// (see ours). A CA Secret without a CA adopts the one the serving Secret held before the CA
// moved out (ca.crt, ca.key, ca-next.*, and the operator's own CAs of its ca-bundle.crt), so an
// upgrade serves no certificate the injected bundle does not already trust; those keys then
// leave the serving Secret.
func (o *Options) plan(in secrets, now time.Time) (secrets, []*x509.Certificate, error) {
	valid := func(p *keyPair) bool { return p != nil && p.cert.IsCA && now.Before(p.cert.NotAfter) }
	cur := parseKeyPair(in.ca[CACertKey], in.ca[CAKeyKey])
	next := parseKeyPair(in.ca[NextCACertKey], in.ca[NextCAKeyKey])
	retired := parseCerts(in.ca[RetiredCACertKey])
	if cur == nil && next == nil {
		cur = parseKeyPair(in.serving[legacyCACertKey], in.serving[legacyCAKeyKey])
		next = parseKeyPair(in.serving[legacyNextCACertKey], in.serving[legacyNextCAKeyKey])
		retired = parseCerts(in.serving[legacyBundleKey])
	}
	previous := cur
	switch {
	case valid(next) && !now.Before(issued(next.cert).Add(o.Propagation)):
		cur, next = next, nil // trusted everywhere by now: it signs from here on
	case !valid(next):
		next = nil
	}
	var err error
	switch {
	case !valid(cur): // a fresh Secret, or nothing left to keep trusting
		if cur, err = newCA(now, o.CAValidity); err != nil {
			return secrets{}, nil, err
		}
		next = nil
	case due(cur.cert, now) && next == nil:
		if next, err = newCA(now, o.CAValidity); err != nil {
			return secrets{}, nil, err
		}
	}
	if previous != nil {
		retired = append([]*x509.Certificate{previous.cert}, retired...)
	}
	retired = slices.DeleteFunc(retired, func(c *x509.Certificate) bool { return !ours(c) })
	bundle := trusted(now, append([]*x509.Certificate{certOf(next), cur.cert}, retired...))

	serving := parseKeyPair(in.serving[CertKey], in.serving[KeyKey])
	if serving == nil || due(serving.cert, now) || !o.validFor(serving.cert, bundle, now) || serving.cert.CheckSignatureFrom(cur.cert) != nil {
		if serving, err = newServing(cur, now, o.CertValidity, o.certDNSNames()); err != nil {
			return secrets{}, nil, err
		}
	}

	out := secrets{ca: cloneData(in.ca), serving: cloneData(in.serving)}
	out.ca[CACertKey], out.ca[CAKeyKey] = cur.certPEM, cur.keyPEM
	delete(out.ca, NextCACertKey)
	delete(out.ca, NextCAKeyKey)
	if next != nil {
		out.ca[NextCACertKey], out.ca[NextCAKeyKey] = next.certPEM, next.keyPEM
	}
	delete(out.ca, RetiredCACertKey)
	if kept := slices.DeleteFunc(slices.Clone(bundle), func(c *x509.Certificate) bool {
		return c.Equal(cur.cert) || (next != nil && c.Equal(next.cert))
	}); len(kept) > 0 {
		out.ca[RetiredCACertKey] = encodeCerts(kept)
	}
	for _, k := range []string{legacyCACertKey, legacyCAKeyKey, legacyNextCACertKey, legacyNextCAKeyKey, legacyBundleKey} {
		delete(out.serving, k)
	}
	out.serving[CertKey], out.serving[KeyKey] = serving.certPEM, serving.keyPEM
	return out, bundle, nil
}

// ours reports whether a retired CA is one this package made: a self-signed CA with its
// subject. Retired CAs come from the CA Secret (or, once, the old bundle), which the operator
// alone writes; the check keeps a certificate pasted there by hand that is not one of its CAs
// out of the bundle.
func ours(c *x509.Certificate) bool {
	return c.IsCA && strings.HasPrefix(c.Subject.CommonName, caNamePrefix) &&
		bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func cloneData(data map[string][]byte) map[string][]byte {
	if data == nil {
		return map[string][]byte{}
	}
	return maps.Clone(data)
}

func certOf(p *keyPair) *x509.Certificate {
	if p == nil {
		return nil
	}
	return p.cert
}

// trusted is the bundle: the given CAs in order (the next CA, the signing CA, the retired
// ones), each once, not yet expired, at most maxBundled.
func trusted(now time.Time, candidates []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range candidates {
		if len(out) == maxBundled {
			break
		}
		if c == nil || !c.IsCA || !now.Before(c.NotAfter) || contains(out, c) {
			continue
		}
		out = append(out, c)
	}
	return out
}

func contains(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// validFor reports whether cert serves every DNS name and chains to the bundle at now.
func (o *Options) validFor(cert *x509.Certificate, bundle []*x509.Certificate, now time.Time) bool {
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	for _, name := range o.certDNSNames() {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return false
		}
	}
	return true
}

// issued is when a certificate was made (its validity starts backdate earlier).
func issued(c *x509.Certificate) time.Time { return c.NotBefore.Add(backdate) }

// due reports whether a third or less of a certificate's life is left at now.
func due(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(issued(c))
	return life <= 0 || !now.Before(issued(c).Add(life*2/3))
}

// renewAt is when c falls due.
func renewAt(c *x509.Certificate) time.Time {
	return issued(c).Add(c.NotAfter.Sub(issued(c)) * 2 / 3)
}

func newCA(now time.Time, validity time.Duration) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s%d", caNamePrefix, now.Unix())},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, nil)
}

func newServing(ca *keyPair, now time.Time, validity time.Duration, dnsNames []string) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: dnsNames[0]},
		DNSNames:    dnsNames,
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return sign(tmpl, ca)
}

// sign makes a P-256 key and a certificate for it from tmpl, signed by parent (self-signed
// when nil).
func sign(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return &keyPair{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		key:     key,
	}, nil
}

// parseKeyPair parses a certificate and its key (PKCS#8, PKCS#1 or SEC 1); nil unless both
// parse and belong together.
func parseKeyPair(certPEM, keyPEM []byte) *keyPair {
	certs := parseCerts(certPEM)
	block, _ := pem.Decode(keyPEM)
	if len(certs) == 0 || block == nil {
		return nil
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil
	}
	signer, ok := key.(crypto.Signer)
	if err != nil || !ok {
		return nil
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil
	}
	return &keyPair{cert: certs[0], certPEM: certPEM, keyPEM: keyPEM, key: signer}
}

// parseCerts parses every CERTIFICATE block, skipping what does not parse.
func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
