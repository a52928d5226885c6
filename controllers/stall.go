package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// defaultProgressDeadline applies when spec.progressDeadlineSeconds is unset (the CRD defaults
// it to the same value, so this only matters for objects stored before that default).
const defaultProgressDeadline = 600 * time.Second

// maxClockSkew is how far ahead of the controller's clock an updateTime may be and still be
// believed: a time further ahead (a writer with a wrong clock, or one that wants its task never
// to stall) counts as absent.
const maxClockSkew = time.Minute

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
// progress. seen holds, per entry type, when the controller first saw the entry's current
// value: the entry's time when it has no believable updateTime of its own.
func checkStall(task *workflowv1alpha1.WorkflowTask, status *workflowv1alpha1.WorkflowTaskStatus, seen map[string]time.Time, now time.Time) stallCheck {
	deadline := defaultProgressDeadline
	if s := task.Spec.ProgressDeadlineSeconds; s != nil {
		deadline = time.Duration(*s) * time.Second
	}
	c := stallCheck{since: lastActivity(status, seen, now), deadline: deadline}
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

// lastActivity is the newest of: any progress entry's time (entryTime), the start time, and the
// time the task was last resumed. Times ahead of the clock by more than maxClockSkew are not
// believed.
func lastActivity(status *workflowv1alpha1.WorkflowTaskStatus, seen map[string]time.Time, now time.Time) time.Time {
	var last time.Time
	later := func(t time.Time) {
		if t.After(last) && !t.After(now.Add(maxClockSkew)) {
			last = t
		}
	}
	for _, p := range status.Progress {
		later(entryTime(p, seen, now))
	}
	if status.StartTime != nil {
		later(status.StartTime.Time)
	}
	if c := meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionSuspended); c != nil && c.Status == "False" {
		later(c.LastTransitionTime.Time)
	}
	return last
}

// entryTime is when a progress entry last changed: its updateTime when it has a believable one,
// else when the controller first saw its current value.
func entryTime(p workflowv1alpha1.ProgressEntry, seen map[string]time.Time, now time.Time) time.Time {
	if p.UpdateTime != nil && !p.UpdateTime.After(now.Add(maxClockSkew)) {
		return p.UpdateTime.Time
	}
	return seen[p.Type]
}

// stallRequeueAfter is when to look again so that a Processing task is marked Stalled the
// moment its deadline passes; 0 when there is nothing to wait for.
func stallRequeueAfter(task *workflowv1alpha1.WorkflowTask, status *workflowv1alpha1.WorkflowTaskStatus, seen map[string]time.Time, now time.Time) time.Duration {
	if status.Phase != workflowv1alpha1.TaskPhaseProcessing {
		return 0
	}
	return checkStall(task, status, seen, now).after
}
