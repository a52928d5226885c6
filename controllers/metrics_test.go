package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	wtestutil "github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestPhaseCollector(t *testing.T) {
	objs := []client.Object{
		wtestutil.MakeTask("a", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Obj(),
		wtestutil.MakeTask("b", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Obj(),
		wtestutil.MakeTask("c", "other").Phase(workflowv1alpha1.TaskPhaseCompleted).Obj(),
		wtestutil.MakeTask("d", "ns").Obj(), // not reconciled yet
	}
	reader := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).Build()
	want := `
# HELP workflowtask_tasks Number of WorkflowTasks by phase (an empty phase: not yet reconciled).
# TYPE workflowtask_tasks gauge
workflowtask_tasks{phase=""} 1
workflowtask_tasks{phase="Canceled"} 0
workflowtask_tasks{phase="Completed"} 1
workflowtask_tasks{phase="Error"} 0
workflowtask_tasks{phase="Processing"} 2
workflowtask_tasks{phase="Queued"} 0
workflowtask_tasks{phase="Suspending"} 0
`
	if err := testutil.CollectAndCompare(NewPhaseCollector(reader), strings.NewReader(want), "workflowtask_tasks"); err != nil {
		t.Error(err)
	}
}

func TestStalledGauge(t *testing.T) {
	stalled := wtestutil.MakeTask("a", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).
		Condition(workflowv1alpha1.ConditionStalled, metav1.ConditionTrue, workflowv1alpha1.ReasonProgressDeadlineExceeded).Obj()
	failed := wtestutil.MakeTask("b", "ns").Phase(workflowv1alpha1.TaskPhaseError). // Stalled too, but finished
											Condition(workflowv1alpha1.ConditionStalled, metav1.ConditionTrue, workflowv1alpha1.ReasonJobFailed).Obj()
	moving := wtestutil.MakeTask("c", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Obj()
	reader := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(stalled, failed, moving).Build()
	want := `
# HELP workflowtask_stalled_tasks Number of Processing WorkflowTasks whose progress has not moved within progressDeadlineSeconds (Stalled=True).
# TYPE workflowtask_stalled_tasks gauge
workflowtask_stalled_tasks 1
`
	if err := testutil.CollectAndCompare(NewPhaseCollector(reader), strings.NewReader(want), "workflowtask_stalled_tasks"); err != nil {
		t.Error(err)
	}
}

func TestMetricType(t *testing.T) {
	for in, want := range map[workflowv1alpha1.TaskType]string{
		workflowv1alpha1.TaskTypeUpload: "upload", workflowv1alpha1.TaskTypeMediaMeta: "media_meta",
		"my_custom_type": "other", "": "other",
	} {
		if got := metricType(in); got != want {
			t.Errorf("metricType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorReason(t *testing.T) {
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	for want, err := range map[string]error{
		workflowv1alpha1.ReasonRunnerConflict: fmt.Errorf("wrapped: %w", &runnerConflictError{}),
		"Conflict":                            errors.Join(errors.New("x"), apierrors.NewConflict(gr, "j", errors.New("changed"))),
		"Forbidden":                           fmt.Errorf("creating: %w", apierrors.NewForbidden(gr, "j", errors.New("no"))),
		"Timeout":                             fmt.Errorf("get: %w", context.DeadlineExceeded),
		"Other":                               errors.New("anything else"),
	} {
		if got := errorReason(err); got != want {
			t.Errorf("errorReason(%v) = %q, want %q", err, got, want)
		}
	}
}

// A task's duration is observed once: when the record first holds its end.
func TestObserveFinished(t *testing.T) {
	TaskDuration.Reset()
	task := wtestutil.MakeTask("t", "ns").Type("my_custom_type").Obj()
	start, end := metav1.NewTime(time.Unix(1000, 0)), metav1.NewTime(time.Unix(1090, 0))
	running := taskRecord{StartTime: &start}
	done := taskRecord{StartTime: &start, Phase: workflowv1alpha1.TaskPhaseCompleted, CompletionTime: &end}
	observeFinished(task, taskRecord{}, running) // not finished
	observeFinished(task, running, done)         // finishes: 90 s
	observeFinished(task, done, done)            // already recorded
	want := `
# HELP workflowtask_task_duration_seconds Time from a task's start (its Job first running; its creation if it never ran) to its end, by type and final phase.
# TYPE workflowtask_task_duration_seconds histogram
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="1"} 0
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="4"} 0
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="16"} 0
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="64"} 0
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="256"} 1
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="1024"} 1
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="4096"} 1
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="16384"} 1
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="65536"} 1
workflowtask_task_duration_seconds_bucket{phase="Completed",type="other",le="+Inf"} 1
workflowtask_task_duration_seconds_sum{phase="Completed",type="other"} 90
workflowtask_task_duration_seconds_count{phase="Completed",type="other"} 1
`
	if err := testutil.CollectAndCompare(TaskDuration, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
