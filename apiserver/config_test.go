package apiserver

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
)

func TestOptionsValidate(t *testing.T) {
	cases := map[string]struct {
		mutate  func(*Options)
		wantErr string
	}{
		"defaults":            {mutate: func(*Options) {}},
		"bad address":         {mutate: func(o *Options) { o.BindAddress = "nope" }, wantErr: "--progress-bind-address"},
		"cert without key":    {mutate: func(o *Options) { o.TLSCertFile = "c" }, wantErr: "go together"},
		"prefix with slash":   {mutate: func(o *Options) { o.PathPrefix = "/api/v4/" }, wantErr: "--progress-path-prefix"},
		"prefix no slash":     {mutate: func(o *Options) { o.PathPrefix = "api" }, wantErr: "--progress-path-prefix"},
		"no reviews":          {mutate: func(o *Options) { o.MaxConcurrentReviews = 0 }, wantErr: "reviews"},
		"no names, no cert":   {mutate: func(o *Options) { o.DNSNames = nil }, wantErr: "--progress-dns-names"},
		"disabled is fine":    {mutate: func(o *Options) { o.BindAddress = "0" }},
		"ingest, defaults":    {mutate: func(o *Options) { o.Ingest = true }},
		"ingest, no budget":   {mutate: func(o *Options) { o.Ingest, o.WriteBudget = true, 0 }, wantErr: "--progress-write-budget"},
		"ingest, no endpoint": {mutate: func(o *Options) { o.Ingest, o.BindAddress = true, "0" }, wantErr: "--progress-ingest"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := NewOptions()
			tc.mutate(o)
			err := o.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// The serving certificate: from files (a mounted Secret) when given, else self-signed for the
// Service's DNS names; TLS 1.2+, client certificates requested, HTTP/1.1 unless HTTP/2 is on.
func TestServingCertificate(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("mounted.example", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	_ = os.WriteFile(certFile, certPEM, 0o600)
	_ = os.WriteFile(keyFile, keyPEM, 0o600)

	for name, tc := range map[string]struct {
		opts     func(*Options)
		wantName string
	}{
		"mounted":     {func(o *Options) { o.TLSCertFile, o.TLSKeyFile = certFile, keyFile }, "mounted.example"},
		"self-signed": {func(*Options) {}, "workflowtask-progress.workflowtask-system.svc"},
	} {
		t.Run(name, func(t *testing.T) {
			o := NewOptions()
			tc.opts(o)
			cc, err := (&Config{Options: o, ReviewConfig: &rest.Config{Host: "https://127.0.0.1:1"}, Log: logr.Discard()}).Complete()
			if err != nil {
				t.Fatal(err)
			}
			if cc.tls.MinVersion != tls.VersionTLS12 || cc.tls.ClientAuth != tls.RequestClientCert || strings.Join(cc.tls.NextProtos, ",") != "http/1.1" {
				t.Errorf("tls config = min %x clientAuth %v protos %v", cc.tls.MinVersion, cc.tls.ClientAuth, cc.tls.NextProtos)
			}
			// A real TLS handshake shows the certificate served.
			ln, err := tls.Listen("tcp", "127.0.0.1:0", cc.tls)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				if c, err := ln.Accept(); err == nil {
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspecting the cert
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			leaf := conn.ConnectionState().PeerCertificates[0]
			if err := leaf.VerifyHostname(tc.wantName); err != nil {
				t.Errorf("served certificate is not for %s: %v (%v)", tc.wantName, err, leaf.DNSNames)
			}
		})
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"0":               true,
		"127.0.0.1:6060":  true,
		"[::1]:6060":      true,
		"localhost:6060":  true,
		":6060":           false, // every interface
		"0.0.0.0:6060":    false,
		"10.0.0.7:6060":   false,
		"example.com:80":  false,
		"127.0.0.1":       false, // no port
		"":                false,
		"[::1]:6060:junk": false,
	} {
		if err := LoopbackOnly(addr); (err == nil) != ok {
			t.Errorf("LoopbackOnly(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
