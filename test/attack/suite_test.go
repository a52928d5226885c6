// Package attack_test is the attack suite that gates the front door: every listener the binary
// opens (the progress endpoint, the metrics port, the health probes, the progress endpoint
// through the aggregation layer, and the ingest path pods push their progress to) × every way a credential arrives (the Authorization header, a
// WebSocket subprotocol, a client certificate, front-proxy headers, none) × hostile inputs
// (junk, forged, huge and unique tokens, unique long IDs, event streams, held connections, slow
// headers, an attacker on its victim's own address). It asserts counts, never times:
// TokenReviews issued within their budgets, the change hub and the open streams back to their
// baseline, goroutines back to baseline, the live heap after GC within a fixed bound of its
// baseline, and a second client — on another address and on the attacker's own — still
// served. A real kube-apiserver and etcd (envtest) with the aggregation layer, real tokens
// (TokenRequest), real RBAC; the listeners are the binary's, set up by
// apiserver.SetupWithManager as main.go does.
package attack_test

import (
	"context"
	"crypto/tls"
	"flag"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// The suite's endpoint options: small enough bounds that the attacks reach them quickly.
var suiteOptions = func(o *apiserver.Options) {
	o.MaxConnections, o.MaxConnectionsPerAddress = 256, 64
	o.MaxStreams, o.MaxStreamsPerUser = 8, 4
	o.StreamHeartbeat, o.StreamLifetime = 200*time.Millisecond, 6*time.Second
	o.Timeouts.Header, o.Timeouts.Read, o.Timeouts.Write = 2*time.Second, 2*time.Second, 2*time.Second
	// A budget that does not refill within a test: a victim's new token after its neighbour's
	// junk shows the junk cannot lock it out, not that the budget refilled meanwhile.
	o.FailedLoginBurst, o.FailedLoginsPerSecond = 10, 0.01
	o.NewTokenBurst, o.NewTokensPerSecond = 10, 0.01
	o.UnverifiableReviewsPerSecond = 5
	o.FlushInterval = time.Second // the tests look at the status soon after a push
}

var (
	env          *envtest.Environment
	adminCfg     *rest.Config
	k8sClient    client.Client
	mgr          ctrl.Manager
	tokenReviews atomic.Int64 // TokenReviews the listeners sent
	// The listeners' URLs: the progress endpoint and the metrics port (HTTPS), the probes.
	progressURL, metricsURL, probesURL string
	opts                               *apiserver.Options
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(testenv.Main(m, testenv.Suite{
		Configure: func(e *envtest.Environment) error {
			dir, err := os.MkdirTemp("", "attack-")
			if err != nil {
				return err
			}
			return testenv.ConfigureAggregation(e, dir)
		},
		BeforeManager: func(ctx context.Context, e *testenv.Env) error {
			env, adminCfg, k8sClient = e.Environment, e.Admin, e.Client
			return startListeners(ctx)
		},
	}, func(*testenv.Env) {}))
}

// startListeners runs the manager with the binary's listeners on loopback (each on a port of
// its own), counting the TokenReviews they send, and routes the aggregation layer to the
// progress endpoint (self-signed: the APIService skips verification here; the TLS suites test
// verification).
func startListeners(ctx context.Context) error {
	var lns [3]net.Listener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns[i] = ln
	}
	url := func(scheme string, ln net.Listener) string {
		return scheme + "://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	progressURL, metricsURL, probesURL = url("https", lns[0]), url("https", lns[1]), url("http", lns[2])
	opts = apiserver.NewOptions()
	opts.BindAddress, opts.MetricsBindAddress, opts.HealthProbeBindAddress = lns[0].Addr().String(), lns[1].Addr().String(), lns[2].Addr().String()
	opts.DNSNames = []string{"workflowtask-progress.workflowtask-system.svc", "localhost"}
	// The ingest door (pods pushing progress) on the endpoint's listener, as --progress-ingest
	// serves it; the status is written at most every 10 s per task, 50 writes a second.
	opts.Ingest, opts.FlushInterval, opts.WriteBudget = true, 10*time.Second, 50
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		suiteOptions(opts) // the benchmark runs the defaults
	}
	var err error
	mgr, err = testenv.StartManager(ctx, adminCfg, func(m ctrl.Manager) error {
		srv, err := apiserver.SetupWithManager(ctx, m, opts, func(c *apiserver.Config) {
			c.Listener, c.MetricsListener, c.ProbesListener = lns[0], lns[1], lns[2]
			c.ReviewConfig = testenv.OnTokenReview(c.ReviewConfig, func() { tokenReviews.Add(1) })
		})
		if err == nil {
			srv.AddReadyzCheck("ping", func(*http.Request) error { return nil })
		}
		return err
	})
	if err != nil {
		return err
	}
	bindMetricsReader(ctx)
	return testenv.InstallAggregation(ctx, k8sClient, lns[0].Addr().(*net.TCPAddr).Port, func(u *unstructured.Unstructured) error {
		unstructured.RemoveNestedField(u.Object, "spec", "caBundle")
		return unstructured.SetNestedField(u.Object, true, "spec", "insecureSkipTLSVerify")
	})
}

var byAddress sync.Map // "ip/scheme" → *http.Client

// clientFrom is an HTTP client whose connections come from ip (any 127/8 address is local),
// one per address so that its connections are reused. The endpoint's certificate is
// self-signed here (the TLS suites verify it).
func clientFrom(ip net.IP) *http.Client {
	c, _ := byAddress.LoadOrStore(ip.String(), &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test endpoint
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext,
		MaxIdleConnsPerHost: 64,
	}})
	return c.(*http.Client)
}

// gauge reads a gauge of the manager's registry (labels as name=value pairs).
func metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func init() {
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
}
