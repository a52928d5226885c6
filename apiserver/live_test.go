package apiserver

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
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
	s := newLiveStore(2)
	now := time.Now()
	key := types.NamespacedName{Namespace: "ns", Name: "t"}
	if !s.put("u1", key, "pod-b", []workflowv1alpha1.ProgressEntry{pe("upload", 5), pe("upload_count", 1)}, false, now) ||
		!s.put("u1", key, "pod-a", []workflowv1alpha1.ProgressEntry{pe("upload_single_0", 3)}, false, now) {
		t.Fatal("put refused")
	}
	if s.put("u1", key, "pod-c", nil, false, now) {
		t.Error("a third writer over maxWriters 2 accepted")
	}
	version := s.tasks["u1"].version
	s.put("u1", key, "pod-a", []workflowv1alpha1.ProgressEntry{pe("upload_single_0", 3)}, false, now)
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
	s.put("u1", key, "pod-b", []workflowv1alpha1.ProgressEntry{pe("upload", 6)}, false, now) // upload_count dropped
	if diff := cmp.Diff([]string{"upload", "upload_single_0"}, types_(s.entries("u1"))); diff != "" {
		t.Errorf("after pod-b dropped an entry (-want +got):\n%s", diff)
	}
}

// Due tasks: unwritten changes, written at most every interval unless urgent (a writer's last
// values); at most n at a time, urgent first, then the longest unwritten; a failed write is due
// again, a written one not until it changes.
func TestLiveStoreDue(t *testing.T) {
	s := newLiveStore(10)
	t0 := time.Now()
	const interval = 10 * time.Second
	for i, uid := range []types.UID{"old", "new", "final"} {
		s.put(uid, types.NamespacedName{Name: string(uid)}, "p", []workflowv1alpha1.ProgressEntry{pe("upload", 1)}, uid == "final", t0.Add(time.Duration(i)*time.Second))
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
	s.put("new", types.NamespacedName{Name: "new"}, "p", []workflowv1alpha1.ProgressEntry{pe("upload", 2)}, false, t0.Add(6*time.Second))
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
