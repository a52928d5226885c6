package endpoint_test

import (
	"context"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func bindProgressAdminGroup(t *testing.T, group string) {
	t.Helper()
	err := k8sClient.Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "progress-admin-group-" + group},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "workflowtask-progress-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: group}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bindInNamespace gives a user a ClusterRole in one namespace.
func bindInNamespace(t *testing.T, ns, user, clusterRole string) {
	t.Helper()
	err := k8sClient.Create(context.Background(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user + "-" + clusterRole, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The ValidatingAdmissionPolicy: a user creates tasks only for themselves; the holder of the
// owner-assigner permission (a GitOps controller) may create them for anyone; owner never changes.
func TestOwnerPolicy(t *testing.T) {
	ctx := context.Background()
	const ns = "owners"
	if _, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, ns, "x"); err != nil {
		t.Fatal(err)
	}
	editor := editorRole(t)
	user := certUser(t, "eve")
	gitops := certUser(t, "gitops-controller")
	bindInNamespace(t, ns, "eve", editor)
	bindInNamespace(t, ns, "gitops-controller", editor)
	bindInNamespace(t, ns, "gitops-controller", "workflowtask-owner-assigner")
	eve, err := client.New(user.Config(), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	argo, err := client.New(gitops.Config(), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	// Eve may create her own task (once RBAC and the policy are in force).
	waitFor(t, func() bool { return eve.Create(ctx, testutil.MakeTask("eves-own", ns).Owner("eve").Obj()) == nil })
	// Not one for someone else: refused, naming the field and the permission.
	waitFor(t, func() bool {
		err := eve.Create(ctx, testutil.MakeTask("for-mallory", ns).Owner("mallory").Obj())
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err)
	})
	err = eve.Create(ctx, testutil.MakeTask("for-mallory-2", ns).Owner("mallory").Obj())
	if err == nil || !strings.Contains(err.Error(), "spec.owner") || !strings.Contains(err.Error(), "assign") {
		t.Errorf("creating a task for someone else: %v", err)
	}
	// The GitOps controller may.
	if err := argo.Create(ctx, testutil.MakeTask("for-mallory", ns).Owner("mallory").Obj()); err != nil {
		t.Errorf("owner-assigner creating for mallory: %v", err)
	}
	// Nobody changes an owner afterwards.
	task := testutil.MakeTask("for-mallory", ns).Obj()
	if err := argo.Get(ctx, client.ObjectKeyFromObject(task), task); err != nil {
		t.Fatal(err)
	}
	task.Spec.Owner = "gitops-controller"
	if err := argo.Update(ctx, task); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "owner is immutable") {
		t.Errorf("changing the owner: %v", err)
	}
}

// editorRole installs config/rbac's task editor ClusterRole and returns its name.
func editorRole(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := readObjects(root + "/config/rbac/workflowtask_editor_role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Prefixed(objs[0])
	if err := k8sClient.Create(context.Background(), objs[0]); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return objs[0].GetName()
}
