package controllers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestAdvanceRecord(t *testing.T) {
	now := metav1.NewTime(t0.Add(time.Hour))
	at := func(tm time.Time) *metav1.Time { return ptr.To(metav1.NewTime(tm)) }
	done := taskRecord{JobCreated: true, StartTime: at(t0), Phase: workflowv1alpha1.TaskPhaseCompleted, Reason: "Completed", Message: "Job t completed", CompletionTime: at(t0)}
	cases := map[string]struct {
		rec   taskRecord
		obs   jobObservation
		state taskState
		want  taskRecord
	}{
		"job seen":                {obs: jobObservation{job: testutil.MakeJob("t", "").Obj()}, state: taskState{phase: workflowv1alpha1.TaskPhaseQueued}, want: taskRecord{JobCreated: true}},
		"start noted once":        {rec: started, obs: jobObservation{job: testutil.MakeJob("t", "").Obj()}, state: taskState{phase: workflowv1alpha1.TaskPhaseProcessing}, want: started},
		"first start":             {rec: created, obs: jobObservation{job: testutil.MakeJob("t", "").Obj()}, state: taskState{phase: workflowv1alpha1.TaskPhaseProcessing}, want: taskRecord{JobCreated: true, StartTime: &now}},
		"verdict noted with time": {rec: started, state: taskState{workflowv1alpha1.TaskPhaseError, "JobFailed", "boom"}, want: taskRecord{JobCreated: true, StartTime: at(t0), Phase: workflowv1alpha1.TaskPhaseError, Reason: "JobFailed", Message: "boom", CompletionTime: &now}},
		"verdict never changes":   {rec: done, state: taskState{workflowv1alpha1.TaskPhaseError, "JobDeleted", "gone"}, want: done},
		"long message cut":        {state: taskState{workflowv1alpha1.TaskPhaseError, "JobInvalid", strings.Repeat("é", 2000)}, want: taskRecord{Phase: workflowv1alpha1.TaskPhaseError, Reason: "JobInvalid", Message: strings.Repeat("é", 1024), CompletionTime: &now}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := advanceRecord(tc.rec, tc.obs, tc.state, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
		})
	}
}

// The record round-trips through the annotation; one that cannot be parsed, or claims an
// unfinished verdict, is not believed.
func TestReadRecord(t *testing.T) {
	rec := taskRecord{JobCreated: true, StartTime: ptr.To(metav1.NewTime(t0)), Phase: workflowv1alpha1.TaskPhaseCanceled, Reason: "Canceled", CompletionTime: ptr.To(metav1.NewTime(t0))}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		annotation string
		want       taskRecord
	}{
		"round trip":           {string(raw), rec},
		"garbage":              {"{not json", taskRecord{}},
		"unfinished verdict":   {`{"jobCreated":true,"phase":"Processing","reason":"x","completionTime":"2026-01-01T00:00:00Z"}`, taskRecord{JobCreated: true}},
		"no annotation at all": {"", taskRecord{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := testutil.MakeTask("t", "ns").Obj()
			if tc.annotation != "" {
				task.Annotations = map[string]string{workflowv1alpha1.AnnotationRecord: tc.annotation}
			}
			if got := readRecord(task); !recordEqual(got, tc.want) {
				t.Errorf("readRecord = %+v, want %+v", got, tc.want)
			}
		})
	}
}
