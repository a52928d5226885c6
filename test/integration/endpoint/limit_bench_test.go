package endpoint_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// BenchmarkEndpointVsBareTLS puts the endpoint beside the physical limit: wrk (a second
// process, -t2 -c32, keep-alive) against GET /workflow/progress/{id} with the owner's token
// (cached, as for a client polling), and against a bare Go TLS server on the same kind of
// certificate answering the same bytes with the same headers — alternating rounds in one
// run, so both see the same machine. It reports each side's best-round throughput and p50/p99
// and the ratios endpoint/bare.
//
//	go test -run '^$' -bench EndpointVsBareTLS -benchtime 1x ./test/integration/endpoint   (make bench)
func BenchmarkEndpointVsBareTLS(b *testing.B) {
	const rounds, round = 3, 5 * time.Second
	owner := newSAUser(b, "users", "limit-owner")
	task := createTaskWithProgress(b, testutil.MakeTask("limit", "bench").Owner(owner.name),
		entry("upload", 16889, 12836332, ""), entry("upload_count", 25, 34, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	// The endpoint's own answer, once: the bare server answers exactly these bytes.
	resp, err := clientFor(b).Do(bearerRequest(endpointURL+path, owner.token))
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	header := resp.Header.Clone()
	header.Del("Date")
	header.Del("Content-Length")
	if code := callRequest(b, clientFor(b), bearerRequest(endpointURL+path, owner.token)); code != apiserver.CodeSuccess {
		b.Fatalf("code %d", code)
	}
	bare := startBareTLS(b, header, body)

	for b.Loop() {
		best := map[string]testenv.WrkResult{}
		for r := range rounds {
			for _, side := range []struct{ name, url string }{{"endpoint", endpointURL + path}, {"bare", bare + path}} {
				res, err := testenv.Wrk(context.Background(), side.url, 32, round, "Authorization: Bearer "+owner.token)
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("round %d %-8s %s", r+1, side.name, res)
				if res.RPS > best[side.name].RPS {
					best[side.name] = res
				}
			}
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		for _, name := range []string{"endpoint", "bare"} {
			b.ReportMetric(best[name].RPS, name+"-req/s")
			b.ReportMetric(ms(best[name].P50), name+"-p50-ms")
			b.ReportMetric(ms(best[name].P99), name+"-p99-ms")
		}
		e, g := best["endpoint"], best["bare"]
		b.ReportMetric(e.RPS/g.RPS, "throughput-ratio")
		b.ReportMetric(float64(e.P99)/float64(g.P99), "p99-ratio")
		b.Logf("best rounds: endpoint %s; bare TLS %s: throughput %.0f%%, p99 %.2f×", e, g, 100*e.RPS/g.RPS, float64(e.P99)/float64(g.P99))
	}
}

// startBareTLS serves body with header to every request over HTTPS (TLS 1.2+, HTTP/1.1,
// keep-alive, a self-signed certificate like the endpoint's), until the benchmark ends.
func startBareTLS(b *testing.B, header http.Header, body []byte) string {
	b.Helper()
	cert, err := tls.X509KeyPair(selfSignedPEM(b))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			for k, v := range header {
				h[k] = v
			}
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
		}),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	b.Cleanup(func() { _ = srv.Close() })
	return "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// selfSignedPEM is a certificate and key like the endpoint's (ECDSA P-256) for 127.0.0.1.
func selfSignedPEM(b *testing.B) (certPEM, keyPEM []byte) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bare"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
