package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// defaultProgressDeadline applies when spec.progressDeadlineSeconds is unset (the CRD defaults
// it to the same value, so this only matters for objects stored before that default).
const defaultProgressDeadline = 600 * time.Second

// stallCheck is the result of checkStall.
type stallCheck struct {
	// since is the last sign of life: the newest progress update, the start, or the resume.
	since time.Time
	// deadline is the task's progress deadline.
	deadline time.Duration
	// stalled is true when nothing happened for deadline.
	stalled bool
	// after is how long until the task stalls if nothing happens; 0 when stalled.
	after time.Duration
}

// checkStall tells whether a Processing task has gone progressDeadlineSeconds without any
// progress entry changing, counting from its start or its last resume when it has no newer
// progress.
func checkStall(task *workflowv1alpha1.WorkflowTask, status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) stallCheck {
	deadline := defaultProgressDeadline
	if s := task.Spec.ProgressDeadlineSeconds; s != nil {
		deadline = time.Duration(*s) * time.Second
	}
	c := stallCheck{since: lastActivity(status), deadline: deadline}
	if c.since.IsZero() {
		return c
	}
	stallAt := c.since.Add(deadline)
	c.stalled = !now.Before(stallAt)
	if !c.stalled {
		c.after = stallAt.Sub(now)
	}
	return c
}

// lastActivity is the newest of: any progress entry's update time, the start time, and the
// time the task was last resumed.
func lastActivity(status *workflowv1alpha1.WorkflowTaskStatus) time.Time {
	var last time.Time
	later := func(t time.Time) {
		if t.After(last) {
			last = t
		}
	}
	for _, p := range status.Progress {
		if p.UpdateTime != nil {
			later(p.UpdateTime.Time)
		}
	}
	if status.StartTime != nil {
		later(status.StartTime.Time)
	}
	if c := meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionSuspended); c != nil && c.Status == "False" {
		later(c.LastTransitionTime.Time)
	}
	return last
}

// stallRequeueAfter is when to look again so that a Processing task is marked Stalled the
// moment its deadline passes; 0 when there is nothing to wait for.
func stallRequeueAfter(task *workflowv1alpha1.WorkflowTask, status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) time.Duration {
	if status.Phase != workflowv1alpha1.TaskPhaseProcessing {
		return 0
	}
	return checkStall(task, status, now).after
}
