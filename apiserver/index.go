package apiserver

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// taskIndex holds the tasks of the manager's informer, kept by its events, by ID (derived from
// the UID, never from status.id, which anyone who may write the status could change) and by
// namespace/name, each with the answer its owner sees rendered once per change: a poll reads
// two maps and writes bytes, it never lists, copies or encodes.
type taskIndex struct {
	// live, when ingest is on, holds what pods pushed and the status has not caught up with:
	// an answer shows it in place of the status's entries of the same type.
	live *liveStore

	mu     sync.RWMutex
	byID   map[string][]*indexedTask
	byName map[types.NamespacedName]*indexedTask

	// rendered, when set (tests), is called between rendering an answer and storing it.
	rendered func()
}

// indexedTask is a task as the informer holds it (read only) and its rendered answer.
type indexedTask struct {
	task *workflowv1alpha1.WorkflowTask
	id   string
	body []byte
}

func newTaskIndex(live *liveStore) *taskIndex {
	return &taskIndex{live: live, byID: map[string][]*indexedTask{}, byName: map[types.NamespacedName]*indexedTask{}}
}

// set adds or replaces t.
func (x *taskIndex) set(t *workflowv1alpha1.WorkflowTask) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.setLocked(t)
}

// setLocked renders t's answer and stores it. The answer is rendered under the lock: of two
// renderings (an informer event, a push), the one stored last read the pushed values last, so
// an answer never goes back to values older than a push it has seen.
func (x *taskIndex) setLocked(t *workflowv1alpha1.WorkflowTask) {
	entries := t.Status.Progress
	if x.live != nil {
		entries = x.live.overlay(t.UID, entries)
	}
	it := &indexedTask{task: t, id: workflowv1alpha1.TaskIDFromUID(t.UID), body: progressBody(entries)}
	if x.rendered != nil {
		x.rendered()
	}
	name := types.NamespacedName{Namespace: t.Namespace, Name: t.Name}
	if old := x.byName[name]; old != nil {
		x.removeIDLocked(old)
	}
	x.byName[name] = it
	x.byID[it.id] = append(x.byID[it.id], it)
}

// refresh renders the answer of task namespace/name again (what was pushed changed), from the
// task as the index holds it now; false when there is no such task or it has another UID.
func (x *taskIndex) refresh(name types.NamespacedName, uid types.UID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	it := x.byName[name]
	if it == nil || it.task.UID != uid {
		return false
	}
	x.setLocked(it.task)
	return true
}

// remove drops t (by its namespace/name and UID).
func (x *taskIndex) remove(t *workflowv1alpha1.WorkflowTask) {
	name := types.NamespacedName{Namespace: t.Namespace, Name: t.Name}
	x.mu.Lock()
	defer x.mu.Unlock()
	if old := x.byName[name]; old != nil && old.task.UID == t.UID {
		x.removeIDLocked(old)
		delete(x.byName, name)
	}
}

func (x *taskIndex) removeIDLocked(it *indexedTask) {
	tasks := x.byID[it.id]
	for i, t := range tasks {
		if t == it {
			tasks = append(tasks[:i:i], tasks[i+1:]...)
			break
		}
	}
	if len(tasks) == 0 {
		delete(x.byID, it.id)
	} else {
		x.byID[it.id] = tasks
	}
}

// ByID returns the tasks whose ID is id (normally one; two only on an ID collision).
func (x *taskIndex) ByID(id string) []*indexedTask {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.byID[id]
}

// ByName returns the task namespace/name, or nil.
func (x *taskIndex) ByName(namespace, name string) *indexedTask {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.byName[types.NamespacedName{Namespace: namespace, Name: name}]
}

// eventHandler keeps the index, then announces the change to the streams that follow the task.
func eventHandler(x *taskIndex, hub *changeHub) toolscache.ResourceEventHandler {
	task := func(obj any) *workflowv1alpha1.WorkflowTask {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		t, _ := obj.(*workflowv1alpha1.WorkflowTask)
		return t
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if t := task(obj); t != nil {
				x.set(t)
				hub.taskChanged(t)
			}
		},
		UpdateFunc: func(_, obj any) {
			if t := task(obj); t != nil {
				if x.live != nil && t.Status.Phase.IsFinished() { // its pods' last values now
					if x.live.clean(t.UID) {
						x.live.forget(t.UID)
					} else {
						x.live.urge(t.UID)
					}
				}
				x.set(t)
				hub.taskChanged(t)
			}
		},
		DeleteFunc: func(obj any) {
			if t := task(obj); t != nil {
				x.remove(t)
				if x.live != nil {
					x.live.forget(t.UID)
				}
				hub.taskChanged(t)
			}
		},
	}
}
