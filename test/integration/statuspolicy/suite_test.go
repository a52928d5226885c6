// Package statuspolicy_test proves the status admission policy of config/admission on a real
// kube-apiserver: a task's runner (real TokenRequest tokens), and anyone else but the operator,
// may change status.progress and nothing else of a task's status, while the operator, run as
// its own ServiceAccount with the generated RBAC, writes everything.
package statuspolicy_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var (
	env       *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	gomega.SetDefaultEventuallyTimeout(20 * time.Second)
	gomega.SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }

	var err error
	if env, adminCfg, err = testenv.Start(); err != nil {
		return fail(err)
	}
	defer func() { _ = env.Stop() }()
	if k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := installAdmission(ctx); err != nil {
		return fail(err)
	}
	if err := waitForPolicy(ctx); err != nil {
		return fail(err)
	}
	if _, err := testenv.StartManager(ctx, adminCfg); err != nil {
		return fail(err)
	}
	return m.Run()
}

// waitForPolicy waits until the API server enforces the status policy (it loads policies
// asynchronously): a status write of the phase by the admin is refused.
func waitForPolicy(ctx context.Context) error {
	probe := testutil.MakeTask("policy-probe", "default").Obj()
	if err := k8sClient.Create(ctx, probe); err != nil {
		return fmt.Errorf("creating the probe task: %w", err)
	}
	defer func() { _ = k8sClient.Delete(ctx, probe) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := k8sClient.Status().Patch(ctx, probe.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Completed"}}`)))
		if apierrors.IsForbidden(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the status policy is not enforced after 30s: last write: %w", err)
		}
	}
}

// installAdmission applies config/admission as kustomize renders it: the manifests a user
// installs, not a copy of them.
func installAdmission(ctx context.Context) error {
	objs, err := testenv.Kustomize(env.ControlPlane.KubectlPath, "admission")
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := k8sClient.Create(ctx, u); err != nil {
			return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}
