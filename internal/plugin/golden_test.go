package plugin

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	kubectlget "k8s.io/kubectl/pkg/cmd/get"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/project"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the output")

// golden compares got with testdata/<name>.golden (or rewrites it with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/plugin -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from the output (-want +got):\n%s", path, diff)
	}
}

func goldenTasks() []workflowv1alpha1.WorkflowTask {
	now := t0
	return []workflowv1alpha1.WorkflowTask{
		*testutil.MakeTask("upload", "media").Created(now.Add(-5*time.Minute)).ID("mA7mF4xyzQ").Phase(workflowv1alpha1.TaskPhaseProcessing).
			Progress("upload", 3<<20, 10<<20, now).Progress("upload_count", 2, 6, now).Obj(),
		*testutil.MakeTask("import", "media").Type(workflowv1alpha1.TaskTypeImport).Owner("bob").Created(now.Add(-90*time.Second)).
			ID("Kp2Lm9QzAa").Phase(workflowv1alpha1.TaskPhaseProcessing).Progress("imported", 7, 0, now).
			ConditionAt(workflowv1alpha1.ConditionStalled, metav1.ConditionTrue, workflowv1alpha1.ReasonProgressDeadlineExceeded,
				"no progress entry changed in 5m0s; the last change was at 05:54:00", now).Obj(),
		*testutil.MakeTask("extract", "batch").Type(workflowv1alpha1.TaskTypeExtractArchive).Created(now.Add(-3*time.Hour)).
			ID("Zx81bbQ0pe").Phase(workflowv1alpha1.TaskPhaseCompleted).Progress("extract_count", 40, 40, now).Obj(),
		*testutil.MakeTask("queued", "batch").Created(now.Add(-2 * time.Second)).Obj(),
	}
}

func TestGetGolden(t *testing.T) {
	for _, tc := range []struct {
		name            string
		wide, namespace bool
	}{{"get", false, false}, {"get-wide-all-namespaces", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printTable(&out, goldenTasks(), t0, tc.wide, tc.namespace); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, out.Bytes())
		})
	}
}

func TestDescribeGolden(t *testing.T) {
	now := t0
	task := testutil.MakeTask("upload", "media").UID("6f1c").Label("team", "media").Created(now.Add(-5*time.Minute)).ID("mA7mF4xyzQ").
		Phase(workflowv1alpha1.TaskPhaseProcessing).StartTime(now.Add(-4*time.Minute)).ProgressDeadlineSeconds(300).
		Progress("upload_single_10", 512, 1024, now.Add(-time.Second)).ProgressIdentifier("/dst/b\x1b[2J.bin").
		Progress("upload", 3<<20, 10<<20, now.Add(-2*time.Second)).Progress("upload_single_2", 0, 0, now).
		ConditionAt(workflowv1alpha1.ConditionReady, metav1.ConditionFalse, workflowv1alpha1.ReasonProcessing, "the Job's pod is running", now.Add(-4*time.Minute)).
		ConditionAt(workflowv1alpha1.ConditionReconciling, metav1.ConditionTrue, workflowv1alpha1.ReasonProgressing, "progress moved 2s ago", now.Add(-4*time.Minute)).Obj()
	job := testutil.MakeJob("upload", "media").Active(1).Obj()
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "upload-x7k2p", CreationTimestamp: metav1.NewTime(now.Add(-4 * time.Minute))},
		Spec:   corev1.PodSpec{NodeName: "kwok-node-0"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 1}}}}
	event := func(kind, name, reason, msg string, ago time.Duration) corev1.Event {
		return corev1.Event{Type: corev1.EventTypeNormal, Reason: reason, Message: msg, LastTimestamp: metav1.NewTime(now.Add(-ago)),
			InvolvedObject: corev1.ObjectReference{Kind: kind, Name: name}}
	}
	var events []corev1.Event
	for i := range 12 { // more than describe shows: only the 10 most recent
		events = append(events, event("Pod", "upload-x7k2p", "Pulled", "pull number "+string(rune('a'+i)), time.Duration(12-i)*time.Second))
	}
	events = append(events, event("WorkflowTask", "upload", "JobCreated", "created Job upload", 5*time.Minute))
	for _, tc := range []struct {
		name string
		d    *described
	}{
		{"describe", &described{task: task, job: job, pods: []corev1.Pod{pod}, events: events}},
		{"describe-not-allowed", &described{task: testutil.MakeTask("queued", "batch").Created(now).Obj(),
			jobErr: "<not allowed to read>", podsErr: "<not allowed to read>", eventsErr: "<not allowed to read>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printDescribe(&out, tc.d, now); err != nil {
				t.Fatal(err)
			}
			if bytes.ContainsRune(out.Bytes(), 0x1b) {
				t.Error("describe printed an escape code from the task's status")
			}
			golden(t, tc.name, out.Bytes())
		})
	}
}

// get -o with kubectl's printers: the list as kubectl would print it.
func TestGetOutputFormats(t *testing.T) {
	list := &workflowv1alpha1.WorkflowTaskList{Items: goldenTasks()}
	for name, output := range map[string]string{
		"get-o-name":           "name",
		"get-o-jsonpath":       `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.phase} {.status.id}{"\n"}{end}`,
		"get-o-go-template":    `go-template={{range .items}}{{.metadata.name}}={{.spec.type}} {{end}}`,
		"get-o-custom-columns": "custom-columns=NAME:.metadata.name,OWNER:.spec.owner,PHASE:.status.phase,ID:.status.id",
	} {
		t.Run(name, func(t *testing.T) {
			g := &getOptions{print: genericclioptions.NewPrintFlags("").WithTypeSetter(project.Scheme),
				columns: kubectlget.NewCustomColumnsPrintFlags()}
			*g.print.OutputFormat = output
			p, err := g.printer()
			if err != nil || p == nil {
				t.Fatalf("printer for -o %s: %v, %v", output, p, err)
			}
			var out bytes.Buffer
			obj, err := unstructuredOf(list.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			if err := p.PrintObj(obj, &out); err != nil {
				t.Fatal(err)
			}
			golden(t, name, out.Bytes())
		})
	}
}
