// Package api_test proves the WorkflowTask CRD's schema on a real kube-apiserver: what it
// accepts, what it refuses, and that each refusal names the field; and the one rule of the API
// that lives in an admission policy instead (config/admission/template_policy.yaml: the pod
// template is immutable).
package api_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Suite{BeforeManager: installTemplatePolicy},
		func(e *testenv.Env) { cfg, k8sClient = e.Admin, e.Client }))
}

// installTemplatePolicy creates the template policy and its binding, and waits until the API
// server enforces it (it loads policies asynchronously): a changed template is refused.
func installTemplatePolicy(ctx context.Context, e *testenv.Env) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	objs, err := testenv.ReadObjects(filepath.Join(root, "config", "admission", "template_policy.yaml"))
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	probe := testutil.MakeTask("template-policy-probe", "default").Obj()
	if err := e.Client.Create(ctx, probe); err != nil {
		return fmt.Errorf("creating the probe task: %w", err)
	}
	defer func() { _ = e.Client.Delete(ctx, probe) }()
	probe.Spec.Template.Spec.Containers[0].Image = "changed"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := e.Client.Update(ctx, probe.DeepCopy())
		switch {
		case apierrors.IsInvalid(err):
			return nil
		case err != nil:
			return fmt.Errorf("probing the template policy: %w", err)
		case time.Now().After(deadline):
			return fmt.Errorf("the template policy is not enforced after 30s")
		}
		// Accepted (not enforced yet): read the probe again, so that the next try changes it again.
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return err
		}
		probe.Spec.Template.Spec.Containers[0].Image += "-again"
	}
}
