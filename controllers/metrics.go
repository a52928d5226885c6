package controllers

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// The operator's metrics. None has a per-task or per-owner label: their series are bounded
// whatever users create (a task type outside Cloudreve's counts as "other").
var (
	tasksDesc = prometheus.NewDesc("workflowtask_tasks",
		"Number of WorkflowTasks by phase (an empty phase: not yet reconciled).", []string{"phase"}, nil)
	stalledDesc = prometheus.NewDesc("workflowtask_stalled_tasks",
		"Number of Processing WorkflowTasks whose progress has not moved within progressDeadlineSeconds (Stalled=True).", nil, nil)

	// TaskDuration is observed once per task, when the operator records its end.
	TaskDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "workflowtask_task_duration_seconds",
		Help:    "Time from a task's start (its Job first running; its creation if it never ran) to its end, by type and final phase.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 s … 18 h
	}, []string{"type", "phase"})
	// ReconcileErrors counts failed reconciles by reason.
	ReconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "workflowtask_reconcile_errors_total",
		Help: "Reconciles that failed, by reason (RunnerConflict, an API status reason such as Conflict or Forbidden, Timeout, Other).",
	}, []string{"reason"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(TaskDuration, ReconcileErrors)
}

// metricType is a task's type as a label: Cloudreve's types as they are, any other "other".
func metricType(t workflowv1alpha1.TaskType) string {
	switch t {
	case workflowv1alpha1.TaskTypeUpload, workflowv1alpha1.TaskTypeImport, workflowv1alpha1.TaskTypeCreateArchive,
		workflowv1alpha1.TaskTypeExtractArchive, workflowv1alpha1.TaskTypeRelocate, workflowv1alpha1.TaskTypeRemoteDownload,
		workflowv1alpha1.TaskTypeMediaMeta:
		return string(t)
	}
	return "other"
}

// observeFinished records a task's duration when the record first holds its end.
func observeFinished(task *workflowv1alpha1.WorkflowTask, old, updated taskRecord) {
	if old.finished() || !updated.finished() || updated.CompletionTime == nil {
		return
	}
	start := task.CreationTimestamp.Time
	if updated.StartTime != nil {
		start = updated.StartTime.Time
	}
	TaskDuration.WithLabelValues(metricType(task.Spec.Type), string(updated.Phase)).
		Observe(max(updated.CompletionTime.Sub(start).Seconds(), 0))
}

// errorReason classifies a reconcile error into a bounded set of reasons.
func errorReason(err error) string {
	var conflict *runnerConflictError
	var stale *staleRecordError
	switch {
	case errors.As(err, &conflict):
		return workflowv1alpha1.ReasonRunnerConflict
	case errors.As(err, &stale):
		return "StaleRecord"
	case apierrors.ReasonForError(err) != metav1.StatusReasonUnknown:
		return string(apierrors.ReasonForError(err))
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	}
	return "Other"
}

// phaseCollector counts tasks by phase from the informer cache at scrape time, so the gauge is
// always exact: no increments to miss, nothing to drift when a task is deleted.
type phaseCollector struct {
	reader client.Reader
}

// NewPhaseCollector returns the collector of the workflowtask_tasks and
// workflowtask_stalled_tasks gauges.
func NewPhaseCollector(reader client.Reader) prometheus.Collector {
	return &phaseCollector{reader: reader}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- tasksDesc; ch <- stalledDesc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	var tasks workflowv1alpha1.WorkflowTaskList
	if err := c.reader.List(context.Background(), &tasks); err != nil {
		log.Log.WithName("metrics").Error(err, "Listing tasks for the workflowtask_tasks gauge")
		ch <- prometheus.NewInvalidMetric(tasksDesc, err)
		ch <- prometheus.NewInvalidMetric(stalledDesc, err)
		return
	}
	counts := map[workflowv1alpha1.TaskPhase]int{}
	for _, p := range []workflowv1alpha1.TaskPhase{
		workflowv1alpha1.TaskPhaseQueued, workflowv1alpha1.TaskPhaseProcessing, workflowv1alpha1.TaskPhaseSuspending,
		workflowv1alpha1.TaskPhaseCompleted, workflowv1alpha1.TaskPhaseError, workflowv1alpha1.TaskPhaseCanceled,
	} {
		counts[p] = 0
	}
	stalled := 0
	for i := range tasks.Items {
		st := &tasks.Items[i].Status
		counts[st.Phase]++
		if st.Phase == workflowv1alpha1.TaskPhaseProcessing && meta.IsStatusConditionTrue(st.Conditions, workflowv1alpha1.ConditionStalled) {
			stalled++
		}
	}
	ch <- prometheus.MustNewConstMetric(stalledDesc, prometheus.GaugeValue, float64(stalled))
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n), string(p))
	}
}
