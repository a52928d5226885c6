package controllers

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
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
