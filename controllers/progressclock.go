package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// progressClock remembers when the controller first saw the current value of each progress
// entry of each running task. Stall detection uses it for entries whose writer gave no
// updateTime (a plain `kubectl patch`, a shell script) or one that cannot be believed. It is
// memory only: after an operator restart such entries count from the restart.
type progressClock struct {
	mu    sync.Mutex
	tasks map[types.NamespacedName]*seenTask
}

type seenTask struct {
	uid     types.UID
	entries map[string]seenValue
}

// seenValue is an entry's value and when it was first seen.
type seenValue struct {
	current, total int64
	identifier     string
	at             time.Time
}

func newProgressClock() *progressClock {
	return &progressClock{tasks: map[types.NamespacedName]*seenTask{}}
}

// observe notes the task's progress entries as seen at now and returns, per type, when the
// controller first saw each entry's current value. Entries no longer there are forgotten.
func (c *progressClock) observe(task *workflowv1alpha1.WorkflowTask, now time.Time) map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := types.NamespacedName{Namespace: task.Namespace, Name: task.Name}
	t := c.tasks[key]
	if t == nil || t.uid != task.UID {
		t = &seenTask{uid: task.UID, entries: map[string]seenValue{}}
		c.tasks[key] = t
	}
	out := make(map[string]time.Time, len(task.Status.Progress))
	entries := make(map[string]seenValue, len(task.Status.Progress))
	for _, p := range task.Status.Progress {
		v := seenValue{current: p.Current, total: p.Total, identifier: p.Identifier, at: now}
		if old, ok := t.entries[p.Type]; ok && old.current == v.current && old.total == v.total && old.identifier == v.identifier {
			v.at = old.at
		}
		entries[p.Type] = v
		out[p.Type] = v.at
	}
	t.entries = entries
	return out
}

// forget drops what was seen of a task (finished or deleted).
func (c *progressClock) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tasks, key)
}
