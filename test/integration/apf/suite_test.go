// Package apf_test proves config/apf on a real kube-apiserver (API Priority and Fairness is on by
// default): a reporter's reads and writes of its task's status, with a real runner token, are
// served at the workflowtask-progress priority level, the operator's at workload-high, and other
// clients' where they were — read from the flow-control headers kube-apiserver answers with.
package apf_test

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

var (
	env       *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	os.Exit(testenv.Main(m, testenv.Suite{Eventually: 30 * time.Second, Manager: true,
		BeforeManager: func(ctx context.Context, e *testenv.Env) error {
			env, adminCfg, k8sClient = e.Environment, e.Admin, e.Client
			return testenv.Install(ctx, k8sClient, env.ControlPlane.KubectlPath, "apf")
		}}, func(*testenv.Env) {}))
}
