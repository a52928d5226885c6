// Package endpoint_test proves the progress endpoint on a real kube-apiserver started with the
// aggregation layer's request-header flags: bearer JWTs checked by TokenReview, front-proxy
// identities through the aggregator, owner/admin by RBAC, the owner admission policy, and every
// body checked against the seed's OpenAPI schemas.
package endpoint_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

var (
	env          *envtest.Environment
	adminCfg     *rest.Config
	k8sClient    client.Client
	mgr          ctrl.Manager
	endpointURL  string       // https://127.0.0.1:<port>
	tokenReviews atomic.Int64 // TokenReviews the endpoint sent
	holdReviews  atomic.Pointer[chan struct{}]
	heldReviews  atomic.Int64
	oidc         *oidcIssuer // an OIDC issuer the cluster trusts
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	gomega.SetDefaultEventuallyTimeout(30 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }

	dir, err := os.MkdirTemp("", "endpoint-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	if env, err = testenv.New(); err != nil {
		return fail(err)
	}
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = filepath.Join(dir, "apiserver") // fixed, to read its service-account key
	if err := os.Mkdir(api.CertDir, 0o700); err != nil {
		return fail(err)
	}
	if oidc, err = newOIDCIssuer(); err != nil {
		return fail(err)
	}
	defer oidc.srv.Close()
	authConfig, err := oidc.authenticationConfig(dir)
	if err != nil {
		return fail(err)
	}
	api.Configure().Set("authentication-config", authConfig)
	if err := testenv.ConfigureAggregation(env, dir); err != nil {
		return fail(err)
	}
	if adminCfg, err = env.Start(); err != nil {
		return fail(err)
	}
	defer func() { _ = env.Stop() }()
	if k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		return fail(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	endpointURL = "https://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := apiserver.NewOptions()
	opts.BindAddress = ln.Addr().String()
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	// TestJunkTokenFloodIsBounded fills the rejection cache with thousands of reviewed junk
	// tokens: no overall bound on such reviews here (test/attack tests it).
	opts.UnverifiableReviewsPerSecond = 1e6
	if err := createCertObjects(ctx); err != nil {
		return fail(err)
	}
	mgr, err = testenv.StartManager(ctx, adminCfg, func(m ctrl.Manager) error {
		source, err := servingcert.Setup(m, certOptions(opts.DNSNames), true)
		if err != nil {
			return err
		}
		_, err = apiserver.SetupWithManager(ctx, m, opts, func(c *apiserver.Config) {
			c.Listener = ln
			c.ReviewConfig = countTokenReviews(c.ReviewConfig)
			c.GetCertificate = source.GetCertificate
		})
		return err
	})
	if err != nil {
		return fail(err)
	}
	if err := testenv.InstallAggregation(ctx, k8sClient, port, nil); err != nil {
		return fail(err)
	}
	return m.Run()
}

// countTokenReviews counts the TokenReviews sent with cfg, and holds them while a test has set
// holdReviews (a slow API server), counting those held.
func countTokenReviews(cfg *rest.Config) *rest.Config {
	return testenv.OnTokenReview(cfg, func() {
		tokenReviews.Add(1)
		if hold := holdReviews.Load(); hold != nil {
			heldReviews.Add(1)
			<-*hold
			heldReviews.Add(-1)
		}
	})
}

// readObjects reads every object of a multi-document YAML file.
func readObjects(path string) ([]*unstructured.Unstructured, error) { return testenv.ReadObjects(path) }
