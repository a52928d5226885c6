package plugin

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// An action patches only the task as it was read: one changed since (a conflict), or deleted and
// created again under its name (its uid differs), is refused by the API server (a real one) and
// left as it is. Without the preconditions in the patch both would be changed blind.
func TestActionOnlyOnTheTaskAsRead(t *testing.T) {
	env, cfg, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create := func() *workflowv1alpha1.WorkflowTask {
		task := testutil.MakeTask("t", "default").Obj()
		if err := c.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
		return task
	}
	suspended := func() bool {
		got := &workflowv1alpha1.WorkflowTask{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "t"}, got); err != nil {
			t.Fatal(err)
		}
		return isTrue(got.Spec.Suspend)
	}

	stale := create()
	changed := stale.DeepCopy()
	changed.Labels = map[string]string{"x": "y"}
	if err := c.Update(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if _, err := suspendAction.do(ctx, c, stale); !apierrors.IsConflict(err) {
		t.Errorf("suspend of a task changed since it was read = %v, want a conflict", err)
	}
	if suspended() {
		t.Error("the changed task was suspended")
	}

	if err := c.Delete(ctx, changed); err != nil {
		t.Fatal(err)
	}
	again := create()
	replaced := again.DeepCopy()
	replaced.UID = stale.UID // what was read before the task was replaced, at the new version
	// (The API server answers a patch of another UID with 422: metadata.uid is immutable.)
	if _, err := suspendAction.do(ctx, c, replaced); !apierrors.IsInvalid(err) {
		t.Errorf("suspend of a task replaced since it was read = %v, want it refused for its uid", err)
	}
	if suspended() {
		t.Error("the task that replaced the one read was suspended")
	}

	if ok, err := suspendAction.do(ctx, c, again); !ok || err != nil || !suspended() {
		t.Errorf("suspend of the task as read = %v, %v; want it suspended", ok, err)
	}
}
