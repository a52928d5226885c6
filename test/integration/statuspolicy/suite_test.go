// Package statuspolicy_test proves the status and record admission policies of config/admission
// on a real kube-apiserver: a task's runner (real TokenRequest tokens), and anyone else but the
// operator, may change status.progress and nothing else of a task's status, and a user bound to
// edit (a client certificate, real RBAC) may not write the record annotation, while the
// operator, run as its own ServiceAccount with the generated RBAC, writes everything.
package statuspolicy_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var (
	env       *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	os.Exit(testenv.Main(m, testenv.Suite{Eventually: 20 * time.Second, Manager: true,
		BeforeManager: func(ctx context.Context, e *testenv.Env) error {
			env, adminCfg, k8sClient = e.Environment, e.Admin, e.Client
			if err := testenv.Install(ctx, k8sClient, env.ControlPlane.KubectlPath, "admission"); err != nil {
				return err
			}
			return waitForPolicy(ctx)
		}}, func(*testenv.Env) {}))
}

// waitForPolicy waits until the API server enforces the status and record policies (it loads
// policies asynchronously): a status write of the phase by the admin is refused, and so is the
// admin's adding the record annotation.
func waitForPolicy(ctx context.Context) error {
	probe := testutil.MakeTask("policy-probe", "default").Obj()
	if err := k8sClient.Create(ctx, probe); err != nil {
		return fmt.Errorf("creating the probe task: %w", err)
	}
	defer func() { _ = k8sClient.Delete(ctx, probe) }()
	tries := 0
	probes := []struct {
		policy string
		write  func() error
	}{
		{"status", func() error {
			return k8sClient.Status().Patch(ctx, probe.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Completed"}}`)))
		}},
		{"record", func() error {
			// Another value each time: a write the policy let through must not make the next a no-op.
			tries++
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"probe %d"}}}`, workflowv1alpha1.AnnotationRecord, tries)
			return k8sClient.Patch(ctx, probe.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
		}},
	}
	for _, p := range probes {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			err := p.write()
			if apierrors.IsForbidden(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the %s policy is not enforced after 30s: last write: %w", p.policy, err)
			}
		}
	}
	return nil
}
