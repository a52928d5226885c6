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

var certSecret = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: servingcert.DefaultSecretName}

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

// createCertSecret creates config/apiserver's empty Secret, named as config/operator names it.
func createCertSecret(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	objs, err := readObjects(filepath.Join(root, "config", "apiserver", "cert_secret.yaml"))
	if err != nil {
		return err
	}
	if len(objs) != 1 {
		return fmt.Errorf("config/apiserver/cert_secret.yaml holds %d objects", len(objs))
	}
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, certSecret.Namespace, "cert-test"); err != nil { // the namespace
		return err
	}
	testenv.Prefixed(objs[0])
	objs[0].SetNamespace(certSecret.Namespace)
	if objs[0].GetName() != certSecret.Name {
		return fmt.Errorf("config/apiserver's Secret is %s, the manager's default %s", objs[0].GetName(), certSecret.Name)
	}
	return k8sClient.Create(ctx, objs[0])
}
