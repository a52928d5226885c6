package apiserver

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The index follows the informer: an update replaces a task's entry (its rendered answer too),
// a task replaced by one of the same name moves to its new ID, a late delete of the old one
// removes nothing, and two tasks with one ID are both found.
func TestTaskIndex(t *testing.T) {
	task := func(name string, uid types.UID, current int64) *workflowv1alpha1.WorkflowTask {
		tk := testutil.MakeTask(name, "ns").Owner("alice").Progress("upload", current, 10, testutilTime).Obj()
		tk.UID = uid
		return tk
	}
	ids := func(x *taskIndex, id string) []string {
		var out []string
		for _, it := range x.ByID(id) {
			out = append(out, it.task.Name+":"+string(it.body))
		}
		return out
	}
	x := newTaskIndex(nil)
	a1 := task("a", "uid-a1", 1)
	idA1 := workflowv1alpha1.TaskIDFromUID(a1.UID)
	x.set(a1)
	x.set(task("a", "uid-a1", 2)) // an update
	if diff := cmp.Diff([]string{`a:{"data":{"upload":{"total":10,"current":2,"identifier":""}},"code":0,"msg":""}`}, ids(x, idA1)); diff != "" {
		t.Errorf("after an update (-want +got):\n%s", diff)
	}
	a2 := task("a", "uid-a2", 3) // deleted and created again under the same name
	x.set(a2)
	x.remove(a1) // the old one's delete, late
	if got := ids(x, idA1); len(got) != 0 {
		t.Errorf("the replaced task is still found by its ID: %v", got)
	}
	if it := x.ByName("ns", "a"); it == nil || it.task.UID != "uid-a2" {
		t.Errorf("by name: %+v", it)
	}
	twin := task("b", a2.UID, 4) // an ID collision (same UID-derived ID)
	x.set(twin)
	if got := ids(x, workflowv1alpha1.TaskIDFromUID(a2.UID)); len(got) != 2 {
		t.Errorf("two tasks with one ID: %v", got)
	}
	x.remove(a2)
	x.remove(twin)
	if len(x.byName) != 0 || len(x.byID) != 0 {
		t.Errorf("after deleting everything: %d by name, %d by ID", len(x.byName), len(x.byID))
	}
}

// A push's answer never goes back: an informer event rendered before a push but stored after
// the push's own rendering must not replace it (a writer's last values would stay hidden until
// the task's next change).
func TestTaskIndexAnswerNeverGoesBack(t *testing.T) {
	live := newLiveStore(8, 8)
	x := newTaskIndex(live)
	task := testutil.MakeTask("a", "ns").Owner("alice").Obj()
	task.UID = "uid-a"
	key := types.NamespacedName{Namespace: "ns", Name: "a"}
	x.set(task)

	// The informer's event renders the task (nothing pushed yet) and is held before it stores.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	x.rendered = func() { once.Do(func() { close(held); <-release }) }
	var wg sync.WaitGroup
	wg.Go(func() { x.set(task) })
	<-held
	x.rendered = nil
	// Meanwhile a pod pushes its last value and the answer is rendered again.
	live.put(task.UID, key, writerKey{"pod", "w"}, []workflowv1alpha1.ProgressEntry{pe("final", 7)}, true, time.Now())
	pushed := make(chan struct{})
	go func() { x.refresh(key, task.UID); close(pushed) }()
	select { // (it waits for the event's store, or is done before it: either way it must win)
	case <-pushed:
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	<-pushed
	if body := string(x.ByName("ns", "a").body); !strings.Contains(body, `"final":{"total":100,"current":7`) {
		t.Errorf("the answer after the push: %s, want the pushed final value", body)
	}
}
