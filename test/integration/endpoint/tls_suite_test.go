package endpoint_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// certClock is the serving-certificate rotator's clock: real time plus an offset a test moves
// forward to make a renewal fall due.
var certClock offsetClock

type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *offsetClock) set(d time.Duration)             { c.offset.Store(int64(d)) }

// The suite's serving certificate: config/'s Secret and APIService, a CA that falls due after
// 20 minutes (a test moves certClock), a next CA trusted for 5 minutes before it signs, and
// the Secret read every second.
const (
	testCAValidity  = 30 * time.Minute
	testPropagation = 5 * time.Minute
)

// The certificate's objects, as config/ names and places them.
var (
	certSecret      = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: servingcert.DefaultSecretName}
	caSecret        = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: servingcert.DefaultCASecretName}
	bundleConfigMap = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: servingcert.DefaultBundleConfigMap}
)

func certOptions(dnsNames []string) *servingcert.Options {
	o := servingcert.NewOptions()
	o.Secret = certSecret
	o.DNSNames = dnsNames
	o.CAValidity = testCAValidity
	o.CertValidity = 2 * time.Hour
	o.Propagation = testPropagation
	o.Interval = time.Second
	o.Clock = &certClock
	return o
}

// createCertObjects creates config/apiserver's empty serving Secret, CA Secret and CA bundle
// ConfigMap, named as config/operator names them.
func createCertObjects(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, certSecret.Namespace, "cert-test"); err != nil { // the namespace
		return err
	}
	for file, want := range map[string]types.NamespacedName{"cert_secret.yaml": certSecret, "ca_secret.yaml": caSecret, "ca_bundle.yaml": bundleConfigMap} {
		objs, err := readObjects(filepath.Join(root, "config", "apiserver", file))
		if err != nil {
			return err
		}
		if len(objs) != 1 {
			return fmt.Errorf("config/apiserver/%s holds %d objects", file, len(objs))
		}
		testenv.Prefixed(objs[0])
		objs[0].SetNamespace(want.Namespace)
		if objs[0].GetName() != want.Name {
			return fmt.Errorf("config/apiserver/%s holds %s, the manager's default %s", file, objs[0].GetName(), want.Name)
		}
		if err := k8sClient.Create(ctx, objs[0]); err != nil {
			return fmt.Errorf("creating %s: %w", want, err)
		}
	}
	return nil
}
