package apiserver

import (
	"slices"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// liveStore holds what a task's pods pushed (ingest), per task and per writer (a pod and a
// writer name within it), until the flusher has written it to the task's status: the endpoint
// and its streams answer from it at once, the status catches up within the flush interval.
type liveStore struct {
	maxWriters, maxPerPod int // per task, per pod of a task

	mu    sync.Mutex
	tasks map[types.UID]*liveTask
}

// writerKey names a writer: its pod and its name within the pod.
type writerKey struct{ pod, name string }

// liveTask is one task's pushed state.
type liveTask struct {
	key     types.NamespacedName
	writers map[writerKey]*liveWriter
	perPod  map[string]int
	// deleted are types no writer holds any more (a writer dropped them, or a one-entry delete),
	// at the version they went: writes leave them out of the status, until the status as read
	// (the informer's, which may lag behind the last write) no longer has them.
	deleted map[string]uint64
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
	// changed is the task's version at this writer's last change: pending until flushed.
	changed uint64
}

func newLiveStore(maxWriters, maxPerPod int) *liveStore {
	return &liveStore{maxWriters: maxWriters, maxPerPod: maxPerPod, tasks: map[types.UID]*liveTask{}}
}

// writer returns task's writer w (created, with the task, when new); nil when the task or the
// pod already has its most writers.
func (s *liveStore) writer(task types.UID, key types.NamespacedName, w writerKey) (*liveTask, *liveWriter) {
	t := s.tasks[task]
	if t == nil {
		t = &liveTask{key: key, writers: map[writerKey]*liveWriter{}, perPod: map[string]int{}, deleted: map[string]uint64{}}
		s.tasks[task] = t
	}
	lw := t.writers[w]
	if lw == nil {
		if len(t.writers) >= s.maxWriters || t.perPod[w.pod] >= s.maxPerPod {
			return t, nil
		}
		lw = &liveWriter{}
		t.writers[w] = lw
		t.perPod[w.pod]++
	}
	return t, lw
}

// put replaces writer w's state for task. ok is false when the task or the pod already has its
// most writers; pending says the writer's values are not in the status yet.
func (s *liveStore) put(task types.UID, key types.NamespacedName, w writerKey, entries []workflowv1alpha1.ProgressEntry, final bool, now time.Time) (ok, pending bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, lw := s.writer(task, key, w)
	if lw == nil {
		return false, false
	}
	if lw.final == final && lw.changed != 0 && slices.EqualFunc(lw.entries, entries, sameEntry) {
		return true, lw.changed > t.flushed // a retry, or a re-send: nothing changed
	}
	old := lw.entries
	lw.entries, lw.final = entries, final
	t.changed(now, final)
	lw.changed = t.version
	for _, e := range old {
		if !t.holds(e.Type) {
			t.deleted[e.Type] = t.version
		}
	}
	for _, e := range entries {
		delete(t.deleted, e.Type)
	}
	return true, true
}

// change applies a one-entry command's change for writer w (named after the type) of task:
// computed from what the task shows now (status: its written entries). A one-entry command is
// a process that exits after it (nobody will send it again), so it is written at once, like a
// writer's last values.
func (s *liveStore) change(task types.UID, key types.NamespacedName, w writerKey, c ingest.Change, status []workflowv1alpha1.ProgressEntry, now time.Time) (ok, pending bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, lw := s.writer(task, key, w)
	if lw == nil {
		return false, false
	}
	t.changed(now, true)
	if c.Delete {
		for _, other := range t.writers {
			other.entries = slices.DeleteFunc(slices.Clone(other.entries), func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == c.Type })
		}
		t.deleted[c.Type] = t.version
		lw.changed = t.version
		return true, true
	}
	have, found := t.shown(c.Type, status)
	lw.entries = []workflowv1alpha1.ProgressEntry{c.Entry(have, found, now)}
	lw.changed = t.version
	delete(t.deleted, c.Type)
	return true, true
}

// changed counts a change of the task.
func (t *liveTask) changed(now time.Time, urgent bool) {
	if t.version == t.flushed {
		t.dirtySince = now
	}
	t.version++
	t.urgent = t.urgent || urgent
}

// holds reports whether any writer holds typ.
func (t *liveTask) holds(typ string) bool {
	for _, w := range t.writers {
		if slices.ContainsFunc(w.entries, func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == typ }) {
			return true
		}
	}
	return false
}

// shown is the entry of typ the task shows: pushed, else written (unless deleted since).
func (t *liveTask) shown(typ string, status []workflowv1alpha1.ProgressEntry) (workflowv1alpha1.ProgressEntry, bool) {
	for _, e := range t.merged() {
		if e.Type == typ {
			return e, true
		}
	}
	if _, gone := t.deleted[typ]; !gone {
		if i := slices.IndexFunc(status, func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == typ }); i >= 0 {
			return status[i], true
		}
	}
	return workflowv1alpha1.ProgressEntry{}, false
}

// sameEntry compares entries by value, update times at the API's precision.
func sameEntry(a, b workflowv1alpha1.ProgressEntry) bool {
	if a.Type != b.Type || a.Current != b.Current || a.Total != b.Total || a.Identifier != b.Identifier {
		return false
	}
	return (a.UpdateTime == nil) == (b.UpdateTime == nil) && (a.UpdateTime == nil || a.UpdateTime.Equal(b.UpdateTime))
}

// merged are the task's pushed entries, merged across its writers by type, sorted by type: a
// type two writers hold goes to the one that changed last (as with field managers, the latest
// writer wins; between writers of the same change, the last in pod and name order).
func (t *liveTask) merged() []workflowv1alpha1.ProgressEntry {
	type held struct {
		entry   workflowv1alpha1.ProgressEntry
		changed uint64
		by      writerKey
	}
	byType := map[string]held{}
	for k, w := range t.writers {
		for _, e := range w.entries {
			h, ok := byType[e.Type]
			if !ok || w.changed > h.changed || w.changed == h.changed && (k.pod > h.by.pod || k.pod == h.by.pod && k.name > h.by.name) {
				byType[e.Type] = held{entry: e, changed: w.changed, by: k}
			}
		}
	}
	out := make([]workflowv1alpha1.ProgressEntry, 0, len(byType))
	for _, h := range byType {
		out = append(out, h.entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// over is status with the pushed entries in place of those of the same type and the deleted
// types left out: what the task shows, and what its next write applies.
func (t *liveTask) over(status []workflowv1alpha1.ProgressEntry) []workflowv1alpha1.ProgressEntry {
	out := t.merged()
	live := len(out)
	for _, e := range status {
		_, gone := t.deleted[e.Type]
		if !gone && !slices.ContainsFunc(out[:live], func(l workflowv1alpha1.ProgressEntry) bool { return l.Type == e.Type }) {
			out = append(out, e)
		}
	}
	return out
}

// overlay is what task shows: its status with the pushed entries over it.
func (s *liveStore) overlay(task types.UID, status []workflowv1alpha1.ProgressEntry) []workflowv1alpha1.ProgressEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[task]
	if t == nil {
		return status
	}
	return t.over(status)
}

// due is a task whose pushed state is to be written: its key, UID and the version it is.
type due struct {
	uid     types.UID
	key     types.NamespacedName
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
		s.tasks[out[i].uid].flushing = true
	}
	return out
}

// toWrite is what the write of d applies (the entries the task shows over status) and whether
// that differs from status at all; d.version is moved to what they are now.
func (s *liveStore) toWrite(d *due, status []workflowv1alpha1.ProgressEntry) ([]workflowv1alpha1.ProgressEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[d.uid]
	if t == nil {
		return nil, false
	}
	d.version = t.version
	for typ, v := range t.deleted { // gone from the status as seen: the mark did its work
		if v <= t.flushed && !slices.ContainsFunc(status, func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == typ }) {
			delete(t.deleted, typ)
		}
	}
	want := t.over(status)
	byType := func(a, b workflowv1alpha1.ProgressEntry) int {
		switch {
		case a.Type < b.Type:
			return -1
		case a.Type > b.Type:
			return 1
		}
		return 0
	}
	slices.SortFunc(want, byType)
	have := slices.SortedFunc(slices.Values(status), byType)
	return want, !slices.EqualFunc(want, have, sameEntry)
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
