package apiserver

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

func pe(typ string, current int64) workflowv1alpha1.ProgressEntry {
	return workflowv1alpha1.ProgressEntry{Type: typ, Current: current, Total: 100}
}

func types_(entries []workflowv1alpha1.ProgressEntry) []string {
	out := []string{}
	for _, e := range entries {
		out = append(out, e.Type)
	}
	return out
}

// Writers' states merge by type; a retry of the same state changes nothing; the status's other
// entries show beside the pushed ones; a task takes at most maxWriters writers.
func TestLiveStoreMerge(t *testing.T) {
	s := newLiveStore(3, 2)
	now := time.Now()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	podA, podB := writerKey{"pod-a", ""}, writerKey{"pod-b", ""}
	if ok, _ := s.put("u1", key, podB, []workflowv1alpha1.ProgressEntry{pe("upload", 5), pe("upload_count", 1)}, false, now); !ok {
		t.Fatal("put refused")
	}
	if ok, _ := s.put("u1", key, podA, []workflowv1alpha1.ProgressEntry{pe("upload_single_0", 3)}, false, now); !ok {
		t.Fatal("put refused")
	}
	if ok, _ := s.put("u1", key, writerKey{"pod-a", "file"}, nil, false, now); !ok {
		t.Fatal("a pod's second writer refused")
	}
	if ok, _ := s.put("u1", key, writerKey{"pod-a", "third"}, nil, false, now); ok {
		t.Error("a pod's third writer over maxPerPod 2 accepted")
	}
	if ok, _ := s.put("u1", key, writerKey{"pod-c", ""}, nil, false, now); ok {
		t.Error("a fourth writer over maxWriters 3 accepted")
	}
	version := s.tasks["u1"].version
	s.put("u1", key, podA, []workflowv1alpha1.ProgressEntry{pe("upload_single_0", 3)}, false, now)
	if s.tasks["u1"].version != version {
		t.Error("a retry of the same state counted as a change")
	}
	got := s.overlay("u1", []workflowv1alpha1.ProgressEntry{pe("upload", 1), pe("indexed", 9)})
	if diff := cmp.Diff([]string{"upload", "upload_count", "upload_single_0", "indexed"}, types_(got)); diff != "" {
		t.Errorf("overlay (-want +got):\n%s", diff)
	}
	if got[0].Current != 5 {
		t.Errorf("the pushed upload (5) does not win over the status's (1): %d", got[0].Current)
	}
	s.put("u1", key, podB, []workflowv1alpha1.ProgressEntry{pe("upload", 6)}, false, now) // upload_count dropped
	if diff := cmp.Diff([]string{"upload", "upload_single_0"}, types_(s.overlay("u1", nil))); diff != "" {
		t.Errorf("after pod-b dropped an entry (-want +got):\n%s", diff)
	}
}

// Due tasks: unwritten changes, written at most every interval unless urgent (a writer's last
// values); at most n at a time, urgent first, then the longest unwritten; a failed write is due
// again, a written one not until it changes.
func TestLiveStoreDue(t *testing.T) {
	s := newLiveStore(10, 10)
	t0 := time.Now()
	const interval = 10 * time.Second
	for i, uid := range []types.UID{"old", "new", "final"} {
		s.put(uid, types.NamespacedName{Name: string(uid)}, writerKey{"p", ""}, []workflowv1alpha1.ProgressEntry{pe("upload", 1)}, uid == "final", t0.Add(time.Duration(i)*time.Second))
	}
	uids := func(ds []due) []string {
		var out []string
		for _, d := range ds {
			out = append(out, string(d.uid))
		}
		return out
	}
	first := s.takeDue(t0.Add(3*time.Second), interval, 2)
	if diff := cmp.Diff([]string{"final", "old"}, uids(first)); diff != "" {
		t.Errorf("first round (-want +got):\n%s", diff)
	}
	if got := uids(s.takeDue(t0.Add(3*time.Second), interval, 10)); len(got) != 1 || got[0] != "new" {
		t.Errorf("while the first round is being written: %v, want only new", got)
	}
	s.flushed(first[0], true, t0.Add(4*time.Second))
	s.flushed(first[1], false, t0.Add(4*time.Second))
	s.flushed(due{uid: "new", version: s.tasks["new"].version}, true, t0.Add(4*time.Second))
	if got := uids(s.takeDue(t0.Add(5*time.Second), interval, 10)); len(got) != 1 || got[0] != "old" {
		t.Errorf("after one written and one failed: %v, want the failed one again", got)
	}
	s.put("new", types.NamespacedName{Name: "new"}, writerKey{"p", ""}, []workflowv1alpha1.ProgressEntry{pe("upload", 2)}, false, t0.Add(6*time.Second))
	if got := s.takeDue(t0.Add(7*time.Second), interval, 10); len(got) != 0 {
		t.Errorf("a change within the interval of the last write is due: %v", uids(got))
	}
	if got := uids(s.takeDue(t0.Add(14*time.Second), interval, 10)); len(got) != 1 || got[0] != "new" {
		t.Errorf("after the interval: %v, want new", got)
	}
	if !s.clean("final") || s.clean("new") {
		t.Error("clean: final should be, new should not")
	}
	s.forget("final")
	if len(s.tasks) != 2 {
		t.Errorf("%d tasks after forgetting one of three", len(s.tasks))
	}
}

// What a write applies: the status with the pushed entries over it; a type a writer dropped, or
// a one-entry delete removed, is left out until the status as read no longer has it (a lagging
// informer does not bring it back); entries only the status has keep their values (a new leader
// loses nothing); a write that would change nothing is not made.
func TestLiveStoreWrites(t *testing.T) {
	s := newLiveStore(10, 10)
	now := time.Now()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	pod := writerKey{"pod", ""}
	status := []workflowv1alpha1.ProgressEntry{pe("indexed", 9), pe("upload", 1)}
	_, pending := s.put("u", key, pod, []workflowv1alpha1.ProgressEntry{pe("upload", 5), pe("upload_count", 1)}, false, now)
	if !pending {
		t.Error("a new push is not pending")
	}
	d := s.takeDue(now.Add(time.Hour), time.Second, 10)[0]
	got, differs := s.toWrite(&d, status)
	if diff := cmp.Diff([]string{"indexed", "upload", "upload_count"}, types_(got)); diff != "" || !differs || got[1].Current != 5 {
		t.Errorf("first write %v (differs %t) (-want +got types):\n%s", got, differs, diff)
	}
	s.flushed(d, true, now)
	if _, pending := s.put("u", key, pod, []workflowv1alpha1.ProgressEntry{pe("upload", 5), pe("upload_count", 1)}, false, now); pending {
		t.Error("a re-send of written values is pending")
	}
	status = got
	s.put("u", key, pod, []workflowv1alpha1.ProgressEntry{pe("upload", 6)}, false, now) // drops upload_count
	s.change("u", key, writerKey{"pod", "indexed"}, ingest.Change{TaskUID: "u", Type: "indexed", Delete: true}, status, now)
	d = s.takeDue(now.Add(2*time.Hour), time.Second, 10)[0]
	got, _ = s.toWrite(&d, status)
	if diff := cmp.Diff([]string{"upload"}, types_(got)); diff != "" {
		t.Errorf("after a dropped type and a delete (-want +got):\n%s", diff)
	}
	s.flushed(d, true, now)
	s.put("u", key, pod, []workflowv1alpha1.ProgressEntry{pe("upload", 7)}, false, now)
	d = s.takeDue(now.Add(3*time.Hour), time.Second, 10)[0]
	if got, _ = s.toWrite(&d, status); len(got) != 1 { // the informer still shows the old status
		t.Errorf("a lagging status brought deleted types back: %v", types_(got))
	}
	s.flushed(d, true, now)
	if _, differs := s.toWrite(&due{uid: "u"}, got); differs {
		t.Error("a write equal to the status is to be made")
	}
	if len(s.tasks["u"].deleted) != 0 {
		t.Errorf("deleted marks %v left once the status has none of them", s.tasks["u"].deleted)
	}
}

// A one-entry change is computed from what the task shows: set keeps total and identifier
// unless given, add adds to the shown current (the status's when nothing was pushed, floored at
// 0), and the result is the pod's writer named after the type.
func TestLiveStoreChange(t *testing.T) {
	s := newLiveStore(10, 10)
	now := time.Now()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	status := []workflowv1alpha1.ProgressEntry{{Type: "files", Current: 3, Total: 10, Identifier: "a"}}
	add := func(n int64) ingest.Change { return ingest.Change{TaskUID: "u", Type: "files", Add: &n} }
	set := func(n int64) ingest.Change { return ingest.Change{TaskUID: "u", Type: "files", Current: &n} }
	shown := func() workflowv1alpha1.ProgressEntry { return s.overlay("u", status)[0] }
	s.change("u", key, writerKey{"pod", "files"}, add(2), status, now)
	if e := shown(); e.Current != 5 || e.Total != 10 || e.Identifier != "a" {
		t.Errorf("add 2 to 3/10: %+v", e)
	}
	s.change("u", key, writerKey{"pod", "files"}, set(1), status, now)
	if e := shown(); e.Current != 1 || e.Total != 10 {
		t.Errorf("set 1: %+v", e)
	}
	s.change("u", key, writerKey{"pod", "files"}, add(-5), status, now)
	if e := shown(); e.Current != 0 {
		t.Errorf("add -5 to 1: %+v, want floored at 0", e)
	}
	if n := len(s.tasks["u"].writers); n != 1 {
		t.Errorf("%d writers, want the one named after the type", n)
	}
}

// A type two writers hold shows the one that changed last, whatever their names (the latest
// writer wins, as with field managers): a pod's new writer after its old one, or the other way.
func TestLiveStoreLatestWriterWins(t *testing.T) {
	s := newLiveStore(10, 10)
	now := time.Now()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	s.put("u", key, writerKey{"pod-b", "storm-2"}, []workflowv1alpha1.ProgressEntry{pe("upload", 1)}, false, now)
	s.put("u", key, writerKey{"pod-a", "storm-1"}, []workflowv1alpha1.ProgressEntry{pe("upload", 2)}, false, now)
	if got := s.overlay("u", nil)[0].Current; got != 2 {
		t.Errorf("upload shows %d, want the last push's 2", got)
	}
	s.put("u", key, writerKey{"pod-b", "storm-2"}, []workflowv1alpha1.ProgressEntry{pe("upload", 3)}, true, now)
	if got := s.overlay("u", nil)[0].Current; got != 3 {
		t.Errorf("upload shows %d, want the last push's 3", got)
	}
}
