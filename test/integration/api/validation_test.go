package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

const ns = "default"

// wantInvalid checks err is a 422 Invalid whose message names field and contains every fragment.
func wantInvalid(t *testing.T, err error, field string, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want Invalid naming %s", field)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v; want Invalid naming %s", err, field)
	}
	msg := err.Error()
	for _, f := range append([]string{field}, fragments...) {
		if !strings.Contains(msg, f) {
			t.Errorf("error %q does not contain %q", msg, f)
		}
	}
}

func TestCreateValidation(t *testing.T) {
	longName := strings.Repeat("a", 64)
	cases := map[string]struct {
		task      *workflowv1alpha1.WorkflowTask
		wantField string // "" means accepted
		wantMsg   string
	}{
		"minimal task":                     {task: testutil.MakeTask("ok-minimal", ns).Obj()},
		"custom type":                      {task: testutil.MakeTask("ok-custom", ns).Type("thumbnail_v2").Obj()},
		"all knobs":                        {task: testutil.MakeTask("ok-knobs", ns).BackoffLimit(0).ActiveDeadlineSeconds(60).TTLSecondsAfterFinished(0).ProgressDeadlineSeconds(30).Suspend(true).Cancel(false).Obj()},
		"missing owner":                    {task: testutil.MakeTask("no-owner", ns).Owner("").Obj(), wantField: "spec.owner"},
		"owner too long":                   {task: testutil.MakeTask("long-owner", ns).Owner(strings.Repeat("o", 254)).Obj(), wantField: "spec.owner", wantMsg: "253"},
		"missing type":                     {task: testutil.MakeTask("no-type", ns).Type("").Obj(), wantField: "spec.type"},
		"type with capitals":               {task: testutil.MakeTask("bad-type", ns).Type("Upload").Obj(), wantField: "spec.type"},
		"type with dash":                   {task: testutil.MakeTask("bad-type2", ns).Type("remote-download").Obj(), wantField: "spec.type"},
		"type too long":                    {task: testutil.MakeTask("long-type", ns).Type(workflowv1alpha1.TaskType(strings.Repeat("t", 64))).Obj(), wantField: "spec.type"},
		"negative backoffLimit":            {task: testutil.MakeTask("neg-backoff", ns).BackoffLimit(-1).Obj(), wantField: "spec.backoffLimit"},
		"zero activeDeadlineSeconds":       {task: testutil.MakeTask("zero-deadline", ns).ActiveDeadlineSeconds(0).Obj(), wantField: "spec.activeDeadlineSeconds"},
		"negative ttlSecondsAfterFinished": {task: testutil.MakeTask("neg-ttl", ns).TTLSecondsAfterFinished(-5).Obj(), wantField: "spec.ttlSecondsAfterFinished"},
		"zero progressDeadlineSeconds":     {task: testutil.MakeTask("zero-progress", ns).ProgressDeadlineSeconds(0).Obj(), wantField: "spec.progressDeadlineSeconds"},
		"name longer than a Job name":      {task: testutil.MakeTask(longName, ns).Obj(), wantField: "metadata.name", wantMsg: "63"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			err := k8sClient.Create(ctx, tc.task)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("refused a valid task: %v", err)
				}
				t.Cleanup(func() { _ = k8sClient.Delete(ctx, tc.task) })
				return
			}
			wantInvalid(t, err, tc.wantField, tc.wantMsg)
		})
	}
}

func TestDefaults(t *testing.T) {
	ctx := context.Background()
	task := testutil.MakeTask("defaults", ns).Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
	if got := ptr.Deref(task.Spec.ProgressDeadlineSeconds, 0); got != 600 {
		t.Errorf("progressDeadlineSeconds defaulted to %d, want 600", got)
	}
}

func TestUpdateValidation(t *testing.T) {
	base := testutil.MakeTask("immutable", ns).BackoffLimit(2).ActiveDeadlineSeconds(600)
	cases := map[string]struct {
		create    *testutil.TaskWrapper // defaults to base
		mutate    func(*workflowv1alpha1.WorkflowTask)
		wantField string
		wantMsg   string
	}{
		"unchanged re-apply":           {mutate: func(*workflowv1alpha1.WorkflowTask) {}},
		"suspend and resume":           {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Suspend = ptr.To(true) }},
		"set ttl later":                {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.TTLSecondsAfterFinished = ptr.To[int32](60) }},
		"change progress deadline":     {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.ProgressDeadlineSeconds = ptr.To[int32](30) }},
		"cancel":                       {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Cancel = ptr.To(true) }},
		"labels are free":              {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Labels = map[string]string{"team": "a"} }},
		"change owner":                 {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Owner = "mallory" }, wantField: "spec.owner", wantMsg: "owner is immutable"},
		"change type":                  {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Type = workflowv1alpha1.TaskTypeRelocate }, wantField: "spec.type", wantMsg: "type is immutable"},
		"change template image":        {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Template.Spec.Containers[0].Image = "evil:latest" }, wantField: "spec.template", wantMsg: "template is immutable"},
		"change backoffLimit":          {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.BackoffLimit = ptr.To[int32](5) }, wantField: "spec.backoffLimit", wantMsg: "backoffLimit is immutable"},
		"remove backoffLimit":          {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.BackoffLimit = nil }, wantField: "spec.backoffLimit", wantMsg: "backoffLimit is immutable"},
		"add backoffLimit":             {create: testutil.MakeTask("immutable", ns), mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.BackoffLimit = ptr.To[int32](1) }, wantField: "spec.backoffLimit", wantMsg: "backoffLimit is immutable"},
		"change activeDeadlineSeconds": {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.ActiveDeadlineSeconds = ptr.To[int64](1) }, wantField: "spec.activeDeadlineSeconds", wantMsg: "activeDeadlineSeconds is immutable"},
		"remove activeDeadlineSeconds": {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.ActiveDeadlineSeconds = nil }, wantField: "spec.activeDeadlineSeconds", wantMsg: "activeDeadlineSeconds is immutable"},
		"add progressSidecar":          {mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{} }, wantField: "spec.progressSidecar", wantMsg: "progressSidecar is immutable"},
		"undo cancel":                  {create: base.Clone().Cancel(true), mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Cancel = ptr.To(false) }, wantField: "spec.cancel", wantMsg: "cannot be undone"},
		"drop cancel":                  {create: base.Clone().Cancel(true), mutate: func(t *workflowv1alpha1.WorkflowTask) { t.Spec.Cancel = nil }, wantField: "spec.cancel", wantMsg: "cannot be undone"},
	}
	i := 0
	for name, tc := range cases {
		i++
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			w := tc.create
			if w == nil {
				w = base
			}
			task := w.Clone().Obj()
			task.Name = fmt.Sprintf("immutable-%d", i)
			if err := k8sClient.Create(ctx, task); err != nil {
				t.Fatalf("create: %v", err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
			tc.mutate(task)
			err := k8sClient.Update(ctx, task)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("refused a valid update: %v", err)
				}
				return
			}
			wantInvalid(t, err, tc.wantField, tc.wantMsg)
		})
	}
}

func TestStatusValidation(t *testing.T) {
	now := time.Now()
	tooMany := testutil.MakeTask("x", ns)
	for i := range 129 {
		tooMany.Progress(fmt.Sprintf("upload_single_%d", i), 1, 2, now)
	}
	maxed := testutil.MakeTask("x", ns)
	for i := range 128 {
		maxed.Progress(fmt.Sprintf("upload_single_%d", i), int64(i), 1<<40, now)
	}
	cases := map[string]struct {
		status    workflowv1alpha1.WorkflowTaskStatus
		wantField string
		wantMsg   string
	}{
		"cloudreve progress types": {status: testutil.MakeTask("x", ns).
			Progress("upload_single_0", 1, 10, now).ProgressIdentifier("/dst/a.bin").
			Progress("upload_count", 25, 34, now).Progress("upload", 16889, 12836332, now).
			Progress("imported", 1, 2, now).Progress("indexed", 2, 2, now).
			Progress("archive_size", 0, 0, now).Progress("extract_count", 3, 9, now).
			Progress("download", 5, 0, now).Progress("relocate", 1, 1, now).
			Phase(workflowv1alpha1.TaskPhaseProcessing).ID("mA7mF4x9Zq").Obj().Status},
		"128 entries":         {status: maxed.Obj().Status},
		"129 entries":         {status: tooMany.Obj().Status, wantField: "status.progress", wantMsg: "128"},
		"negative current":    {status: testutil.MakeTask("x", ns).Progress("upload", -1, 10, now).Obj().Status, wantField: "status.progress[0].current"},
		"negative total":      {status: testutil.MakeTask("x", ns).Progress("upload", 1, -10, now).Obj().Status, wantField: "status.progress[0].total"},
		"bad progress type":   {status: testutil.MakeTask("x", ns).Progress("Upload-Single 0", 1, 2, now).Obj().Status, wantField: "status.progress[0].type"},
		"empty progress type": {status: testutil.MakeTask("x", ns).Progress("", 1, 2, now).Obj().Status, wantField: "status.progress[0].type"},
		"identifier too long": {status: testutil.MakeTask("x", ns).Progress("upload_single_0", 1, 2, now).ProgressIdentifier(strings.Repeat("i", 1025)).Obj().Status, wantField: "status.progress[0].identifier"},
		"duplicate type":      {status: testutil.MakeTask("x", ns).Progress("upload", 1, 2, now).Progress("upload", 2, 2, now).Obj().Status, wantField: "status.progress[1]", wantMsg: "Duplicate"},
		"unknown phase":       {status: testutil.MakeTask("x", ns).Phase("Running").Obj().Status, wantField: "status.phase"},
		"malformed id":        {status: testutil.MakeTask("x", ns).ID("../etc").Obj().Status, wantField: "status.id"},
	}
	i := 0
	for name, tc := range cases {
		i++
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			task := testutil.MakeTask(fmt.Sprintf("status-%d", i), ns).Obj()
			if err := k8sClient.Create(ctx, task); err != nil {
				t.Fatalf("create: %v", err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
			task.Status = tc.status
			err := k8sClient.Status().Update(ctx, task)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("refused a valid status: %v", err)
				}
				return
			}
			wantInvalid(t, err, tc.wantField, tc.wantMsg)
		})
	}
}

// A required entry field left out (here current) is refused, naming it; updateTime is optional
// (shell scripts and plain `kubectl patch` leave it out; the controller times such entries).
func TestProgressEntryRequiredFields(t *testing.T) {
	ctx := context.Background()
	task := testutil.MakeTask("entry-fields", ns).Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
	patch := []byte(`{"status":{"progress":[{"type":"upload","total":2}]}}`)
	err := k8sClient.Status().Patch(ctx, task, client.RawPatch("application/merge-patch+json", patch))
	wantInvalid(t, err, "status.progress[0].current", "Required")

	patch = []byte(`{"status":{"progress":[{"type":"upload","current":1,"total":2}]}}`)
	if err := k8sClient.Status().Patch(ctx, task, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		t.Fatalf("an entry without updateTime: %v", err)
	}
	if got := task.Status.Progress; len(got) != 1 || got[0].UpdateTime != nil || got[0].Current != 1 {
		t.Errorf("stored entry: %+v", got)
	}
}

// Status is a subresource: writing it through the main resource changes nothing.
func TestStatusIsASubresource(t *testing.T) {
	ctx := context.Background()
	task := testutil.MakeTask("subresource", ns).Phase(workflowv1alpha1.TaskPhaseCompleted).Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
	if task.Status.Phase != "" {
		t.Fatalf("status was written through create: %+v", task.Status)
	}
}

// The pod template carries core/v1's structural schema: a manifest whose container has no name
// is refused by path. (Pod-level rules beyond the schema are checked when the Job is created.)
func TestTemplateIsValidated(t *testing.T) {
	ctx := context.Background()
	manifest := `{"apiVersion":"workflow.taskops.dev/v1alpha1","kind":"WorkflowTask",
		"metadata":{"name":"bad-template","namespace":"default"},
		"spec":{"type":"upload","owner":"alice","template":{"spec":{"containers":[{"image":"x"}]}}}}`
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(manifest)); err != nil {
		t.Fatal(err)
	}
	err := k8sClient.Create(ctx, u)
	wantInvalid(t, err, "spec.template.spec.containers[0].name", "Required")
}

// The pod template's own labels and annotations are kept (not pruned), so they reach the pods.
func TestTemplateMetadataIsKept(t *testing.T) {
	ctx := context.Background()
	task := testutil.MakeTask("template-metadata", ns).Obj()
	task.Spec.Template.Labels = map[string]string{"app": "uploader"}
	task.Spec.Template.Annotations = map[string]string{"example.com/trace": "on"}
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, task) })
	got := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(task), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Template.Labels["app"] != "uploader" || got.Spec.Template.Annotations["example.com/trace"] != "on" {
		t.Errorf("template metadata pruned: %+v", got.Spec.Template.ObjectMeta)
	}
}
