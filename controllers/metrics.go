package controllers

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

var tasksDesc = prometheus.NewDesc("workflowtask_tasks",
	"Number of WorkflowTasks by phase (an empty phase: not yet reconciled).", []string{"phase"}, nil)

// phaseCollector counts tasks by phase from the informer cache at scrape time, so the gauge is
// always exact: no increments to miss, nothing to drift when a task is deleted.
type phaseCollector struct {
	reader client.Reader
}

// NewPhaseCollector returns the collector of the workflowtask_tasks gauge.
func NewPhaseCollector(reader client.Reader) prometheus.Collector {
	return &phaseCollector{reader: reader}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- tasksDesc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	var tasks workflowv1alpha1.WorkflowTaskList
	if err := c.reader.List(context.Background(), &tasks); err != nil {
		log.Log.WithName("metrics").Error(err, "Listing tasks for the workflowtask_tasks gauge")
		ch <- prometheus.NewInvalidMetric(tasksDesc, err)
		return
	}
	counts := map[workflowv1alpha1.TaskPhase]int{}
	for _, p := range []workflowv1alpha1.TaskPhase{
		workflowv1alpha1.TaskPhaseQueued, workflowv1alpha1.TaskPhaseProcessing, workflowv1alpha1.TaskPhaseSuspending,
		workflowv1alpha1.TaskPhaseCompleted, workflowv1alpha1.TaskPhaseError, workflowv1alpha1.TaskPhaseCanceled,
	} {
		counts[p] = 0
	}
	for i := range tasks.Items {
		counts[tasks.Items[i].Status.Phase]++
	}
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n), string(p))
	}
}
