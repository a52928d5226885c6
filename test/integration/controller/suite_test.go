// Package controller_test runs the WorkflowTask controller against a real kube-apiserver and
// etcd, as the operator's own ServiceAccount with the RBAC generated from its markers. There is
// no kubelet, Job controller or garbage collector here: tests drive Job status themselves, the
// way the Job controller of Kubernetes 1.37 would.
package controller_test

import (
	"flag"
	"io"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

var (
	env       *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
	mgr       ctrl.Manager
)

func TestMain(m *testing.M) {
	flag.Parse() // for testing.Verbose
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(logSink())))
	gomega.SetDefaultConsistentlyDuration(2 * time.Second)
	gomega.SetDefaultConsistentlyPollingInterval(100 * time.Millisecond)
	suite := testenv.Suite{Eventually: timeout, Polling: interval, Manager: true,
		// The suite's controller runs in direct mode; ingest mode's controller (ingest_test.go)
		// and the notifying ones (notify_test.go) have namespaces of their own, which this one
		// leaves alone.
		ManagerSetup: testenv.ManagerSetup{Cache: func(o *cache.Options) {
			others := []fields.Selector{fields.OneTermNotEqualSelector("metadata.namespace", ingestNamespace)}
			for _, ns := range notifyNamespaces {
				others = append(others, fields.OneTermNotEqualSelector("metadata.namespace", ns))
			}
			o.DefaultNamespaces = map[string]cache.Config{cache.AllNamespaces: {FieldSelector: fields.AndSelectors(others...)}}
		}},
	}
	os.Exit(testenv.Main(m, suite, func(e *testenv.Env) {
		env, adminCfg, k8sClient, mgr = e.Environment, e.Admin, e.Client, e.Manager
	}))
}

// logSink is where the controller's logs go: stderr with -v, else nowhere (they are long).
func logSink() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}
