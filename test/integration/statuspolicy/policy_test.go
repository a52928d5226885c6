package statuspolicy_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var nsCounter atomic.Int32

// startedTask creates a task in a namespace of its own and waits until the controller has put
// it in Processing (its pod reported progress) and its runner identity exists; it returns the
// task and a client holding a real token of the task's runner ServiceAccount.
func startedTask(t *testing.T, name string) (*workflowv1alpha1.WorkflowTask, client.Client) {
	t.Helper()
	ctx := context.Background()
	ns := testutil.NamespaceName("policy", nsCounter.Add(1), t.Name())
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	task := testutil.MakeTask(name, ns).Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task)).To(gomega.Succeed())
		g.Expect(task.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseQueued))
	}).Should(gomega.Succeed())
	token, err := testenv.Token(ctx, adminCfg, ns, name+"-runner")
	if err != nil {
		t.Fatal(err)
	}
	runner, err := client.New(testenv.BearerConfig(adminCfg, token), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	g.Eventually(func() error {
		return patchStatus(runner, task, `{"status":{"progress":[{"type":"upload","current":1,"total":4}]}}`)
	}).
		Should(gomega.Succeed(), "the runner writes progress")
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task)).To(gomega.Succeed())
		g.Expect(task.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseProcessing))
	}).Should(gomega.Succeed())
	return task, runner
}

func patchStatus(c client.Client, task *workflowv1alpha1.WorkflowTask, patch string) error {
	return c.Status().Patch(context.Background(), task.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
}

// The runner's token may change status.progress and nothing else: every other status field is
// refused with a message naming it and saying that only the operator writes it.
func TestRunnerMayWriteOnlyProgress(t *testing.T) {
	task, runner := startedTask(t, "guarded")
	cases := map[string]struct {
		patch      string
		wantFields []string
	}{
		"phase":              {`{"status":{"phase":"Completed"}}`, []string{"status.phase"}},
		"completionTime":     {`{"status":{"completionTime":"2000-01-01T00:00:00Z"}}`, []string{"status.completionTime"}},
		"startTime":          {`{"status":{"startTime":"2999-01-01T00:00:00Z"}}`, []string{"status.startTime"}},
		"startTime removed":  {`{"status":{"startTime":null}}`, []string{"status.startTime"}},
		"conditions":         {`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Forged","message":"x","lastTransitionTime":"2000-01-01T00:00:00Z"}]}}`, []string{"status.conditions"}},
		"id":                 {`{"status":{"id":"AAAAAAAAAA"}}`, []string{"status.id"}},
		"observedGeneration": {`{"status":{"observedGeneration":99}}`, []string{"status.observedGeneration"}},
		"progressSummary":    {`{"status":{"progressSummary":"100%"}}`, []string{"status.progressSummary"}},
		"the whole status":   {`{"status":null}`, []string{"status.phase", "status.conditions", "status.startTime", "status.id", "status.observedGeneration", "status.progressSummary"}},
		"the attack": {`{"status":{"phase":"Completed","completionTime":"2000-01-01T00:00:00Z",
			"conditions":[{"type":"Ready","status":"True","reason":"Forged","message":"x","lastTransitionTime":"2000-01-01T00:00:00Z"}]}}`,
			[]string{"status.phase", "status.conditions", "status.completionTime"}},
		"progress smuggled with phase": {`{"status":{"phase":"Error","progress":[{"type":"upload","current":4,"total":4}]}}`, []string{"status.phase"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := patchStatus(runner, task, tc.patch)
			if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
				t.Fatalf("got %v, want refused", err)
			}
			msg := err.Error()
			want := strings.Join(tc.wantFields, ", ") + ": only the workflowtask operator may write"
			if !strings.Contains(msg, want) {
				t.Errorf("message %q does not start its reason with %q", msg, want)
			}
		})
	}
	// Nothing of it landed.
	got := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != workflowv1alpha1.TaskPhaseProcessing || got.Status.CompletionTime != nil || got.Status.Progress[0].Current != 1 {
		t.Errorf("a refused write changed the task: %+v", got.Status)
	}
}

// Progress alone goes through, however it is written: merge patch without updateTime, JSON
// patch, server-side apply with the reporter's field manager.
func TestRunnerProgressIsAccepted(t *testing.T) {
	ctx := context.Background()
	task, runner := startedTask(t, "reporting")
	if err := patchStatus(runner, task, `{"status":{"progress":[{"type":"upload","current":2,"total":4}]}}`); err != nil {
		t.Errorf("merge patch of progress: %v", err)
	}
	jsonPatch := `[{"op":"replace","path":"/status/progress/0/current","value":3}]`
	if err := runner.Status().Patch(ctx, task.DeepCopy(), client.RawPatch(types.JSONPatchType, []byte(jsonPatch))); err != nil {
		t.Errorf("JSON patch of progress: %v", err)
	}
	apply := &workflowv1alpha1.WorkflowTask{
		TypeMeta:   metav1.TypeMeta{APIVersion: workflowv1alpha1.GroupVersion.String(), Kind: "WorkflowTask"},
		ObjectMeta: metav1.ObjectMeta{Name: task.Name, Namespace: task.Namespace},
		Status: workflowv1alpha1.WorkflowTaskStatus{Progress: []workflowv1alpha1.ProgressEntry{
			{Type: "upload_count", Current: 1, Total: 2, UpdateTime: ptr.To(metav1.NewMicroTime(time.Now()))}}},
	}
	if err := runner.Status().Patch(ctx, apply, client.Apply, client.FieldOwner("workflowtask-progress/pod-0"), client.ForceOwnership); err != nil { //nolint:staticcheck // the apply patch the reporter sends
		t.Errorf("server-side apply of progress: %v", err)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got := &workflowv1alpha1.WorkflowTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
		g.Expect(got.Status.Progress).To(gomega.HaveLen(2))
		g.Expect(got.Status.ProgressSummary).To(gomega.Equal("75%"), "the operator still writes its fields")
	}).Should(gomega.Succeed())
}

// The policy is not about runners only: anyone but the operator, cluster-admin included, may
// change progress and nothing else.
func TestAdminIsNotTheOperator(t *testing.T) {
	task, _ := startedTask(t, "admin")
	err := patchStatus(k8sClient, task, `{"status":{"phase":"Canceled"}}`)
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "status.phase") {
		t.Errorf("cluster-admin writing the phase: %v", err)
	}
	if err := patchStatus(k8sClient, task, `{"status":{"progress":[{"type":"upload","current":4,"total":4}]}}`); err != nil {
		t.Errorf("cluster-admin writing progress: %v", err)
	}
}

// The operator's own identity (its ServiceAccount, as the policy names it) writes every field.
func TestOperatorWritesEverything(t *testing.T) {
	task, _ := startedTask(t, "operator")
	cfg, err := testenv.ManagerConfig(context.Background(), adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	for field, value := range map[string]string{
		"phase": `"Processing"`, "completionTime": `null`, "startTime": `"2026-01-01T00:00:00Z"`, "id": `"BBBBBBBBBB"`,
		"observedGeneration": `1`, "progressSummary": `"25%"`,
		"conditions": `[{"type":"Ready","status":"False","reason":"Processing","message":"x","lastTransitionTime":"2026-01-01T00:00:00Z"}]`,
	} {
		if err := patchStatus(operator, task, fmt.Sprintf(`{"status":{%q:%s}}`, field, value)); err != nil {
			t.Errorf("the operator writing %s: %v", field, err)
		}
	}
}

// Under the policy the controller's own writes go through a whole life: Queued, Processing,
// Canceled with its completion time and conditions.
func TestLifecycleUnderPolicy(t *testing.T) {
	ctx := context.Background()
	task, _ := startedTask(t, "lifecycle")
	patch := client.MergeFrom(task.DeepCopy())
	task.Spec.Cancel = ptr.To(true)
	if err := k8sClient.Patch(ctx, task, patch); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got := &workflowv1alpha1.WorkflowTask{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got)).To(gomega.Succeed())
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseCanceled))
		g.Expect(got.Status.CompletionTime).NotTo(gomega.BeNil())
		g.Expect(got.Status.Progress).To(gomega.HaveLen(1))
	}).Should(gomega.Succeed())
}
