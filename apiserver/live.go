package apiserver

import (
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// liveStore holds what a task's pods pushed (ingest), per task and per writer (pod), until the
// flusher has written it to the task's status: the endpoint and its streams answer from it at
// once, the status catches up within the flush interval.
type liveStore struct {
	maxWriters int // per task

	mu    sync.Mutex
	tasks map[types.UID]*liveTask
}

// liveTask is one task's pushed state.
type liveTask struct {
	key     types.NamespacedName
	writers map[string]*liveWriter // by pod name
	// version counts changes; flushed is the version last written; dirtySince is when the
	// first unwritten change came; urgent says a writer finished (Close) or the task ended.
	version, flushed uint64
	dirtySince       time.Time
	lastFlush        time.Time
	urgent           bool
	flushing         bool
}

type liveWriter struct {
	entries []workflowv1alpha1.ProgressEntry
	final   bool
}

func newLiveStore(maxWriters int) *liveStore {
	return &liveStore{maxWriters: maxWriters, tasks: map[types.UID]*liveTask{}}
}

// put replaces pod's state for task; false when the task already has maxWriters other writers.
func (s *liveStore) put(task types.UID, key types.NamespacedName, pod string, entries []workflowv1alpha1.ProgressEntry, final bool, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[task]
	if t == nil {
		t = &liveTask{key: key, writers: map[string]*liveWriter{}}
		s.tasks[task] = t
	}
	w := t.writers[pod]
	if w == nil {
		if len(t.writers) >= s.maxWriters {
			return false
		}
		w = &liveWriter{}
		t.writers[pod] = w
	}
	if w.final == final && slices.EqualFunc(w.entries, entries, sameEntry) {
		return true // a retry: nothing changed
	}
	w.entries, w.final = entries, final
	if t.version == t.flushed {
		t.dirtySince = now
	}
	t.version++
	t.urgent = t.urgent || final
	return true
}

// sameEntry compares entries by value, update times at the API's precision.
func sameEntry(a, b workflowv1alpha1.ProgressEntry) bool {
	if a.Type != b.Type || a.Current != b.Current || a.Total != b.Total || a.Identifier != b.Identifier {
		return false
	}
	return (a.UpdateTime == nil) == (b.UpdateTime == nil) && (a.UpdateTime == nil || a.UpdateTime.Equal(b.UpdateTime))
}

// entries are task's pushed entries, merged across its writers by type (writers in name order;
// a type two writers push goes to the last), sorted by type; nil when none.
func (s *liveStore) entries(task types.UID) []workflowv1alpha1.ProgressEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[task]
	if t == nil {
		return nil
	}
	return t.merged()
}

func (t *liveTask) merged() []workflowv1alpha1.ProgressEntry {
	pods := make([]string, 0, len(t.writers))
	for p := range t.writers {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	byType := map[string]workflowv1alpha1.ProgressEntry{}
	for _, p := range pods {
		for _, e := range t.writers[p].entries {
			byType[e.Type] = e
		}
	}
	out := make([]workflowv1alpha1.ProgressEntry, 0, len(byType))
	for _, e := range byType {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// overlay is status with the pushed entries of task in place of those of the same type.
func (s *liveStore) overlay(task types.UID, status []workflowv1alpha1.ProgressEntry) []workflowv1alpha1.ProgressEntry {
	live := s.entries(task)
	if len(live) == 0 {
		return status
	}
	out := slices.Clone(live)
	for _, e := range status {
		if !slices.ContainsFunc(live, func(l workflowv1alpha1.ProgressEntry) bool { return l.Type == e.Type }) {
			out = append(out, e)
		}
	}
	return out
}

// due is a task whose pushed state is to be written: its key, UID, entries and the version
// they are.
type due struct {
	uid     types.UID
	key     types.NamespacedName
	entries []workflowv1alpha1.ProgressEntry
	version uint64
	since   time.Time
}

// takeDue marks at most n tasks as being written and returns them: tasks with unwritten
// changes that are urgent or were last written at least interval ago, the longest unwritten
// first.
func (s *liveStore) takeDue(now time.Time, interval time.Duration, n int) []due {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []due
	for uid, t := range s.tasks {
		if t.flushing || t.version == t.flushed || !t.urgent && now.Sub(t.lastFlush) < interval {
			continue
		}
		out = append(out, due{uid: uid, key: t.key, version: t.version, since: t.dirtySince})
	}
	sort.Slice(out, func(i, j int) bool {
		ui, uj := s.tasks[out[i].uid].urgent, s.tasks[out[j].uid].urgent
		if ui != uj {
			return ui
		}
		return out[i].since.Before(out[j].since)
	})
	if len(out) > n {
		out = out[:n]
	}
	for i := range out {
		t := s.tasks[out[i].uid]
		t.flushing = true
		out[i].entries = t.merged()
	}
	return out
}

// flushed records the outcome of writing d: written (that version is in the status), or not
// (to be tried again at the next round).
func (s *liveStore) flushed(d due, written bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[d.uid]
	if t == nil {
		return
	}
	t.flushing = false
	if !written {
		return
	}
	t.lastFlush = now
	t.flushed = d.version
	if t.version == t.flushed {
		t.urgent = false
	}
}

// forget drops a task (deleted, or ended and written).
func (s *liveStore) forget(task types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, task)
}

// urge marks a task's pushed state to be written at once (the task ended).
func (s *liveStore) urge(task types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tasks[task]; t != nil {
		t.urgent = true
	}
}

// clean reports whether task has nothing unwritten.
func (s *liveStore) clean(task types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[task]
	return t == nil || t.version == t.flushed
}
