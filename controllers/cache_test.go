package controllers

import (
	"encoding/json"
	"testing"
	"unsafe"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestTrimForCache(t *testing.T) {
	withWriters := func(w *testutil.TaskWrapper) *workflowv1alpha1.WorkflowTask {
		task := w.Obj()
		task.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "workflowtask-progress/pod-0"}, {Manager: "workflowtask-progress/pod-1"}}
		return task
	}
	recorded := func(rec string) *testutil.TaskWrapper {
		w := testutil.MakeTask("t", "ns")
		w.Annotations = map[string]string{workflowv1alpha1.AnnotationRecord: rec}
		return w
	}
	for _, tc := range []struct {
		name         string
		task         *workflowv1alpha1.WorkflowTask
		keepTemplate bool
	}{
		{"no Job yet: the template is what the Job will be made of", withWriters(testutil.MakeTask("t", "ns")), true},
		{"a record without the Job", withWriters(recorded(`{"startTime":"2026-11-29T06:00:00Z"}`)), true},
		{"a record the controller cannot read counts as none", withWriters(recorded(`{jobCreated`)), true},
		{"the Job was created: the template is never read again", withWriters(recorded(`{"jobCreated":true}`)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := trimForCache(tc.task)
			if err != nil {
				t.Fatal(err)
			}
			task := got.(*workflowv1alpha1.WorkflowTask)
			if task.ManagedFields != nil {
				t.Errorf("managedFields kept: %v", task.ManagedFields)
			}
			if kept := len(task.Spec.Template.Spec.Containers) > 0; kept != tc.keepTemplate {
				t.Errorf("template kept = %v, want %v", kept, tc.keepTemplate)
			}
			if task.Spec.Owner != "alice" || task.Spec.Type != workflowv1alpha1.TaskTypeUpload {
				t.Errorf("trimmed more than the template: %+v", task.Spec)
			}
		})
	}
	job := testutil.MakeJob("t", "ns").Suspend(true).Active(1).Obj()
	job.Spec.Template.Spec.Containers = testutil.MakeTask("t", "ns").Obj().Spec.Template.Spec.Containers
	job.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}
	got, _ := trimForCache(job)
	j := got.(*batchv1.Job)
	if len(j.Spec.Template.Spec.Containers) != 0 || j.ManagedFields != nil {
		t.Errorf("Job kept its template or managedFields: %+v", j)
	}
	if !*j.Spec.Suspend || j.Status.Active != 1 {
		t.Errorf("Job lost what the controller reads: suspend %v, active %d", *j.Spec.Suspend, j.Status.Active)
	}
}

// Objects decoded apart share the strings they repeat once trimmed, and keep their values.
func TestTrimForCacheInterns(t *testing.T) {
	decode := func() (*batchv1.Job, *workflowv1alpha1.WorkflowTask) {
		job := testutil.MakeJob("t", "ns").Obj()
		job.Labels = map[string]string{workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue}
		job.OwnerReferences = []metav1.OwnerReference{{APIVersion: workflowv1alpha1.GroupVersion.String(), Kind: "WorkflowTask", Name: "t", UID: "u"}}
		job.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"batch.kubernetes.io/controller-uid": "u"}}
		job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods"}}
		task := testutil.MakeTask("t", "ns").Obj()
		task.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Completed", Message: "done"}}
		// Through JSON, as an informer decodes them: each string its own copy.
		for _, o := range []any{job, task} {
			raw, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, o); err != nil {
				t.Fatal(err)
			}
			if _, err := trimForCache(o); err != nil {
				t.Fatal(err)
			}
		}
		return job, task
	}
	j1, t1 := decode()
	j2, t2 := decode()
	same := func(what, a, b string) {
		t.Helper()
		if a != b || unsafe.StringData(a) != unsafe.StringData(b) {
			t.Errorf("%s: %q and %q are not one shared string", what, a, b)
		}
	}
	same("namespace", j1.Namespace, t2.Namespace)
	same("label value", j1.Labels[workflowv1alpha1.LabelManagedBy], j2.Labels[workflowv1alpha1.LabelManagedBy])
	same("owner apiVersion", j1.OwnerReferences[0].APIVersion, j2.OwnerReferences[0].APIVersion)
	same("Job condition reason", j1.Status.Conditions[0].Reason, j2.Status.Conditions[0].Reason)
	same("Job condition message", j1.Status.Conditions[0].Message, j2.Status.Conditions[0].Message)
	same("task condition message", t1.Status.Conditions[0].Message, t2.Status.Conditions[0].Message)
	if j1.Spec.Selector != nil {
		t.Errorf("Job selector kept: %v", j1.Spec.Selector)
	}
	if j1.Status.Conditions[0].Type != batchv1.JobComplete || j1.Status.Conditions[0].Status != corev1.ConditionTrue || j1.OwnerReferences[0].Kind != "WorkflowTask" {
		t.Errorf("interning changed values: %+v %+v", j1.Status.Conditions[0], j1.OwnerReferences[0])
	}
}
