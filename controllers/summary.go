package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// SummaryInterval is the least time between two status writes that change nothing but a
// task's progressSummary. Progress itself is the pods' and is seen at once; the summary is the
// controller's copy of its main entry for `kubectl get` (a printer column cannot compute it),
// and without a pace a busy task costs the API server a controller write for every progress
// write of its pods (make bench-scale: as many as the reporters' own). Any other change —
// phase, conditions, times — is written at once, with the summary as it is then.
const SummaryInterval = 5 * time.Second

// summaryPacer remembers, per task, when the controller last wrote a new summary.
type summaryPacer struct {
	mu   sync.Mutex
	last map[types.NamespacedName]time.Time
}

func newSummaryPacer() *summaryPacer {
	return &summaryPacer{last: map[types.NamespacedName]time.Time{}}
}

// pace returns the status to write for the task at key: status itself, or — when the only
// change from old is the summary and the last summary was written less than SummaryInterval
// ago — status with the old summary kept, and when to look again to write the new one.
func (p *summaryPacer) pace(key types.NamespacedName, old, status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) (workflowv1alpha1.WorkflowTaskStatus, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, seen := p.last[key]
	out, wait := paceSummary(old, status, last, seen, now)
	if out.ProgressSummary != old.ProgressSummary {
		p.last[key] = now
	}
	return out, wait
}

// forget drops a task that is gone or finished.
func (p *summaryPacer) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.last, key)
}

// paceSummary is pace's decision: hold back a summary-only change made within SummaryInterval
// of the last summary written (seen: one was), and say when it may be written.
func paceSummary(old, status *workflowv1alpha1.WorkflowTaskStatus, last time.Time, seen bool, now time.Time) (workflowv1alpha1.WorkflowTaskStatus, time.Duration) {
	if old.ProgressSummary == status.ProgressSummary || !seen || now.Sub(last) >= SummaryInterval {
		return *status, 0
	}
	held := *status.DeepCopy()
	held.ProgressSummary = old.ProgressSummary
	if !equality.Semantic.DeepEqual(&held, old) {
		return *status, 0 // something else changed too: write it all now
	}
	return held, last.Add(SummaryInterval).Sub(now)
}
