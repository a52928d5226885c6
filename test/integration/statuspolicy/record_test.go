package statuspolicy_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// A record as the controller writes it, and the measured attack: Completed in 2000.
const (
	forgedRecord = `{"jobCreated":true,"phase":"Completed","reason":"Completed","completionTime":"2000-01-01T00:00:00Z"}`
	recordName   = workflowv1alpha1.AnnotationRecord
)

var userRoles sync.Once

// editor is a user of its own, authenticated by a client certificate, bound in ns to the
// built-in edit ClusterRole aggregated with config/rbac's workflowtask editor role: what a team
// member of a real cluster holds. It returns once RBAC lets the user list tasks there.
func editor(t *testing.T, name, ns string) client.Client {
	t.Helper()
	ctx := context.Background()
	var err error
	userRoles.Do(func() { err = testenv.InstallUserRoles(ctx, k8sClient) })
	if err != nil {
		t.Fatal(err)
	}
	user, err := env.AddUser(envtest.User{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-edit", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: name}},
	}
	if err := k8sClient.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(user.Config(), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() error {
		return c.List(ctx, &workflowv1alpha1.WorkflowTaskList{}, client.InNamespace(ns))
	}).Should(gomega.Succeed(), "RBAC lets %s edit tasks in %s", name, ns)
	return c
}

// refusedForRecord asserts that err is the record policy's refusal, naming the annotation.
func refusedForRecord(t *testing.T, err error, what string) {
	t.Helper()
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("%s: got %v, want refused", what, err)
		return
	}
	if msg := err.Error(); !strings.Contains(msg, recordName) || !strings.Contains(msg, "only the operator may write it") {
		t.Errorf("%s: message %q does not name %s as the operator's", what, msg, recordName)
	}
}

func patchTask(c client.Client, task *workflowv1alpha1.WorkflowTask, patch string) error {
	return c.Patch(context.Background(), task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
}

// The record annotation is the operator's: a user bound to edit (real RBAC, real identity) may
// not set it on a task they create, change it, or remove it, and neither may cluster-admin;
// each refusal names the annotation. Everything else of the task stays theirs to write. The
// operator's own ServiceAccount changes and removes it. (It cannot create tasks at all: its
// ClusterRole has no create on workflowtasks.)
func TestRecordIsTheOperators(t *testing.T) {
	ctx := context.Background()
	ns := testutil.NamespaceName("policy", nsCounter.Add(1), t.Name())
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	alice := editor(t, "alice", ns)

	withRecord := testutil.MakeTask("forged", ns).Owner("alice").Obj()
	withRecord.Annotations = map[string]string{recordName: forgedRecord}
	refusedForRecord(t, alice.Create(ctx, withRecord), "create with the record")
	withEmpty := testutil.MakeTask("empty-record", ns).Owner("alice").Obj()
	withEmpty.Annotations = map[string]string{recordName: ""}
	refusedForRecord(t, alice.Create(ctx, withEmpty), "create with an empty record")

	task := testutil.MakeTask("guarded", ns).Owner("alice").Obj()
	if err := alice.Create(ctx, task); err != nil {
		t.Fatalf("create without the record: %v", err)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task)).To(gomega.Succeed())
		g.Expect(task.Annotations).To(gomega.HaveKey(recordName), "the operator writes its record")
		g.Expect(task.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseQueued))
	}).Should(gomega.Succeed())
	stored := task.Annotations[recordName]

	for what, patch := range map[string]string{
		"change": `{"metadata":{"annotations":{"` + recordName + `":` + quote(forgedRecord) + `}}}`,
		"remove": `{"metadata":{"annotations":{"` + recordName + `":null}}}`,
		"garble": `{"metadata":{"annotations":{"` + recordName + `":"{not json"}}}`,
	} {
		refusedForRecord(t, patchTask(alice, task, patch), "alice: "+what)
		refusedForRecord(t, patchTask(k8sClient, task, patch), "cluster-admin: "+what)
	}
	// kubectl replace of a manifest without the annotation (read again after a conflict: the
	// operator may still be writing the task).
	var replaceErr error
	g.Eventually(func(g gomega.Gomega) {
		replaced := &workflowv1alpha1.WorkflowTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), replaced)).To(gomega.Succeed())
		replaced.Annotations = nil
		replaceErr = alice.Update(ctx, replaced)
		g.Expect(apierrors.IsConflict(replaceErr)).To(gomega.BeFalse())
	}).Should(gomega.Succeed())
	refusedForRecord(t, replaceErr, "alice: replace without it")

	// The rest of the task stays the user's: another annotation, a label, cancel.
	if err := patchTask(alice, task, `{"metadata":{"annotations":{"team":"a"},"labels":{"tier":"batch"}},"spec":{"cancel":true}}`); err != nil {
		t.Errorf("alice writing another annotation, a label and cancel: %v", err)
	}
	g.Eventually(func(g gomega.Gomega) {
		got := &workflowv1alpha1.WorkflowTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseCanceled))
		g.Expect(got.Annotations[recordName]).NotTo(gomega.Equal(stored), "the operator recorded the verdict")
	}).Should(gomega.Succeed())

	cfg, err := testenv.ManagerConfig(ctx, adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := patchTask(operator, task, `{"metadata":{"annotations":{"`+recordName+`":`+quote(forgedRecord)+`}}}`); err != nil {
		t.Errorf("the operator changing the record: %v", err)
	}
	if err := patchTask(operator, task, `{"metadata":{"annotations":{"`+recordName+`":null}}}`); err != nil {
		t.Errorf("the operator removing the record: %v", err)
	}
}

// quote is s as a JSON string.
func quote(s string) string { return strconv.Quote(s) }
