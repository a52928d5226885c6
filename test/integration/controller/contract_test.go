package controller_test

import (
	"bufio"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/healthcheck"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var updateContract = flag.Bool("update-contract", false,
	"rewrite config/argocd/…/testdata and health_test.yaml from the objects the controller produces")

// contractRow is one row of the status-contract table of docs/api.md.
type contractRow struct {
	Phase, Ready, Reconciling, Stalled string
	KStatus, ArgoCD, Flux              string
}

// readContract parses the table between the status-contract markers of docs/api.md.
func readContract(t *testing.T) map[string]contractRow {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]contractRow{}
	in := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case strings.Contains(line, "<!-- status-contract:begin -->"):
			in = true
			continue
		case strings.Contains(line, "<!-- status-contract:end -->"):
			return rows
		}
		if !in || !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| case ") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 8 {
			t.Fatalf("docs/api.md status contract: row %q has %d cells", line, len(cells))
		}
		rows[cells[0]] = contractRow{cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]}
	}
	t.Fatal("docs/api.md: no status-contract table")
	return nil
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

const argoDir = "config/argocd/workflow.taskops.dev/WorkflowTask"

// contractCases drive a task into each case of the contract with the real controller and return
// it as the API server serves it. The file is its Argo CD testdata.
var contractCases = []struct {
	row, file string
	build     func(t *testing.T, ns string) map[string]any
}{
	{"not yet reconciled", "not-reconciled.yaml", func(t *testing.T, ns string) map[string]any {
		// As a GitOps tool applies it; the create response is the object before any controller
		// has seen it.
		u := asUnstructured(t, testutil.MakeTask("fresh", ns).Obj())
		unstructured.RemoveNestedField(u.Object, "status")
		if err := k8sClient.Create(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		return u.Object
	}},
	{"queued", "queued.yaml", func(t *testing.T, ns string) map[string]any {
		task := createTask(t, testutil.MakeTask("waiting", ns))
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseQueued))
	}},
	{"processing", "processing.yaml", func(t *testing.T, ns string) map[string]any {
		return live(t, processing(t, ns, "upload-7", 0))
	}},
	{"stalled: no progress within progressDeadlineSeconds", "stalled.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "slow", 1)
		var got *workflowv1alpha1.WorkflowTask
		gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
			got = getTask(g, task)
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, workflowv1alpha1.ConditionStalled)).To(gomega.BeTrue())
		}).Should(gomega.Succeed())
		return live(t, got)
	}},
	{"suspended", "suspended.yaml", func(t *testing.T, ns string) map[string]any {
		task := createTask(t, testutil.MakeTask("held", ns).Suspend(true))
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseSuspending))
	}},
	{"spec changed, not yet observed", "spec-changed.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "changing", 0)
		// The update's response: the new generation, before the controller has looked at it.
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))
		gomega.NewWithT(t).Eventually(func() error {
			if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), u); err != nil {
				return err
			}
			if err := unstructured.SetNestedField(u.Object, true, "spec", "suspend"); err != nil {
				return err
			}
			return k8sClient.Update(context.Background(), u)
		}).Should(gomega.Succeed())
		return u.Object
	}},
	{"completed", "completed.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "done", 0)
		completeJob(t, waitJob(t, task))
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted))
	}},
	{"failed: the Job failed", "failed.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "broken", 0)
		failJob(t, waitJob(t, task), batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseError))
	}},
	{"failed: activeDeadlineSeconds", "deadline-exceeded.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "too-long", 0)
		failJob(t, waitJob(t, task), batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseError))
	}},
	{"failed: the Job deleted while running", "job-deleted.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "orphaned", 0)
		if err := k8sClient.Delete(context.Background(), waitJob(t, task), client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseError))
	}},
	{"canceled", "canceled.yaml", func(t *testing.T, ns string) map[string]any {
		task := processing(t, ns, "cancel-me", 0)
		job := waitJob(t, task)
		patchSpec(t, task, func(s *workflowv1alpha1.WorkflowTaskSpec) { s.Cancel = ptr.To(true) })
		collectForeground(t, job)
		return live(t, waitPhase(t, task, workflowv1alpha1.TaskPhaseCanceled))
	}},
}

// processing is a running task that reported 45 of 100 (deadline: progressDeadlineSeconds, 0 for
// the default).
func processing(t *testing.T, ns, name string, deadline int32) *workflowv1alpha1.WorkflowTask {
	w := testutil.MakeTask(name, ns)
	if deadline > 0 {
		w = w.ProgressDeadlineSeconds(deadline)
	}
	task := createTask(t, w)
	runJob(t, waitJob(t, task))
	if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload", 45, 100)); err != nil {
		t.Fatal(err)
	}
	var got *workflowv1alpha1.WorkflowTask
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		got = getTask(g, task)
		g.Expect(got.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseProcessing))
		g.Expect(got.Status.ProgressSummary).To(gomega.Equal("45%"))
	}).Should(gomega.Succeed())
	return got
}

// live reads the task again, as JSON, the way a GitOps tool sees it.
func live(t *testing.T, task *workflowv1alpha1.WorkflowTask) map[string]any {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), u); err != nil {
		t.Fatal(err)
	}
	return u.Object
}

func asUnstructured(t *testing.T, task *workflowv1alpha1.WorkflowTask) *unstructured.Unstructured {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(task)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetGroupVersionKind(workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))
	return u
}

// condStatus is a condition's status in a JSON object, "—" when it has none.
func condStatus(obj map[string]any, typ string) string {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return "—"
}

func readFluxExprs(t *testing.T) healthcheck.FluxExprs {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "flux", "workflowtasks-kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Spec struct {
			HealthCheckExprs []struct {
				APIVersion, Kind string
				healthcheck.FluxExprs
			} `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	for _, e := range k.Spec.HealthCheckExprs {
		if e.Kind == "WorkflowTask" && e.APIVersion == workflowv1alpha1.GroupVersion.String() {
			return e.FluxExprs
		}
	}
	t.Fatal("config/flux: no healthCheckExprs for WorkflowTask")
	return healthcheck.FluxExprs{}
}

// Every case of the status contract (docs/api.md), driven by the real controller, judged by kstatus
// (the library Flux runs), the Argo CD health script (in Argo CD's Lua sandbox) and the Flux
// healthCheckExprs (Flux's evaluator, fluxcd/pkg/runtime/cel): each cell of the table holds. The Argo CD testdata are these
// objects (normalized), so health_test.yaml tests what the controller really writes.
func TestStatusContract(t *testing.T) {
	rows := readContract(t)
	if len(rows) != len(contractCases) {
		t.Errorf("docs/api.md's table has %d rows, the test %d cases", len(rows), len(contractCases))
	}
	script, err := os.ReadFile(filepath.Join(repoRoot(t), argoDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	exprs := readFluxExprs(t)
	type argoCase struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	}
	argoTests := make([]argoCase, len(contractCases))
	t.Run("cases", func(t *testing.T) {
		for i, c := range contractCases {
			t.Run(c.row, func(t *testing.T) {
				t.Parallel()
				want, ok := rows[c.row]
				if !ok {
					t.Fatalf("no row %q in docs/api.md", c.row)
				}
				obj := c.build(t, newNamespace(t))
				phase, _, _ := unstructured.NestedString(obj, "status", "phase")
				if phase == "" {
					phase = "—"
				}
				got := contractRow{Phase: phase, Ready: condStatus(obj, "Ready"), Reconciling: condStatus(obj, "Reconciling"), Stalled: condStatus(obj, "Stalled")}
				var msg string
				var err error
				if got.KStatus, msg, err = healthcheck.KStatus(obj); err != nil {
					t.Fatal(err)
				}
				t.Logf("kstatus: %s: %s", got.KStatus, msg)
				if got.ArgoCD, msg, err = healthcheck.ArgoHealth(string(script), obj); err != nil {
					t.Fatal(err)
				}
				t.Logf("Argo CD: %s: %s", got.ArgoCD, msg)
				if got.Flux, err = healthcheck.FluxStatus(exprs, obj); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("contract (-docs/api.md +observed):\n%s", diff)
				}
				testdata := normalize(obj)
				path := filepath.Join(repoRoot(t), argoDir, "testdata", c.file)
				if *updateContract {
					writeYAML(t, path, testdata)
				} else {
					checkTestdata(t, path, testdata)
				}
				_, argoMsg, err := healthcheck.ArgoHealth(string(script), testdata)
				if err != nil {
					t.Fatal(err)
				}
				argoTests[i].HealthStatus.Status, argoTests[i].HealthStatus.Message = got.ArgoCD, argoMsg
				argoTests[i].InputPath = "testdata/" + c.file
			})
		}
	})
	if *updateContract && !t.Failed() {
		writeYAML(t, filepath.Join(repoRoot(t), argoDir, "health_test.yaml"), map[string]any{"tests": argoTests})
	}
}

// normalize is the object as Argo CD testdata: what the health check reads, without what
// changes from run to run (namespace, times, the uid and the ID derived from it, managed
// fields, the record annotation).
func normalize(obj map[string]any) map[string]any {
	u := (&unstructured.Unstructured{Object: obj}).DeepCopy()
	name, generation := u.GetName(), u.GetGeneration()
	u.SetUnstructuredContent(map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "spec": u.Object["spec"], "status": u.Object["status"]})
	u.SetName(name)
	u.SetNamespace("tasks")
	u.SetGeneration(generation)
	unstructured.RemoveNestedField(u.Object, "spec", "template")
	if _, found, _ := unstructured.NestedString(u.Object, "status", "id"); found { // derived from the uid
		_ = unstructured.SetNestedField(u.Object, "AAAAAAAAAA", "status", "id")
	}
	out := stampTimes(u.Object).(map[string]any)
	return out
}

var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// stampTimes replaces every timestamp (fields and inside messages) by a fixed one.
func stampTimes(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = stampTimes(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = stampTimes(e)
		}
		return v
	case string:
		return rfc3339.ReplaceAllString(v, "2026-01-01T00:00:00Z")
	default:
		return v
	}
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkTestdata compares the committed testdata with the object the controller produced.
func checkTestdata(t *testing.T, path string, want map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate: go test ./test/integration/controller -run TestStatusContract -args -update-contract)", err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := yaml.Marshal(want) // the same number and map representation on both sides
	var wantNorm map[string]any
	_ = yaml.Unmarshal(wantJSON, &wantNorm)
	if diff := cmp.Diff(wantNorm, got); diff != "" {
		t.Errorf("%s is not what the controller produces (-controller +file); regenerate with -update-contract:\n%s", path, diff)
	}
}
