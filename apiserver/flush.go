package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// IngestFieldManager owns, in a task's status.progress, the entries the operator wrote for its
// pods (server-side apply): a push that drops an entry drops it from the status at the next
// write, and entries pods wrote themselves (direct mode) are never touched.
const IngestFieldManager = "workflowtask-ingest"

// flusher writes what pods pushed into their tasks' status.progress. Only the leader runs it
// (and only the leader takes pushes): each task at most every interval — urgent ones, a
// writer's last values or a task's end, at once — and across all tasks at most budget writes a
// second, the longest unwritten first. So the control plane's cost is the budget, not the
// number of pods times their rate.
type flusher struct {
	live     *liveStore
	tasks    *taskIndex
	client   client.Client
	interval time.Duration
	budget   float64
	workers  int
	leading  *atomic.Bool
	log      logr.Logger
}

var _ manager.LeaderElectionRunnable = (*flusher)(nil)

// NeedLeaderElection: one writer, the leader.
func (f *flusher) NeedLeaderElection() bool { return true }

// flushWorkers is how many writes the flusher keeps in flight: enough to spend a budget of
// budget writes a second while each takes up to 250 ms — a busy operator's own latency included
// (storm M = 10,000: four workers wrote 24 a second of a budget of 50, and 10,000 writers' last
// values took minutes).
func flushWorkers(budget float64) int {
	return max(4, int(math.Ceil(budget/4)))
}

// flushTick is how often the flusher looks for due tasks.
const flushTick = 50 * time.Millisecond

// Start writes until ctx ends, taking pushes meanwhile.
func (f *flusher) Start(ctx context.Context) error {
	f.leading.Store(true)
	defer f.leading.Store(false)
	tokens, last := f.budget, time.Now() // a token bucket of one second's budget
	work := make(chan due)
	var wg sync.WaitGroup
	for range f.workers {
		wg.Go(func() {
			for d := range work {
				err := f.write(ctx, &d)
				if err != nil && ctx.Err() == nil {
					f.log.Error(err, "Writing pushed progress; retrying", "task", d.key)
				}
				f.live.flushed(d, err == nil, time.Now())
			}
		})
	}
	defer func() { close(work); wg.Wait() }()
	t := time.NewTicker(flushTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			tokens = min(f.budget, tokens+now.Sub(last).Seconds()*f.budget)
			last = now
			for _, d := range f.live.takeDue(now, f.interval, int(tokens)) {
				tokens--
				select {
				case work <- d:
				case <-ctx.Done():
					f.live.flushed(d, false, now)
					return nil
				}
			}
		}
	}
}

// write applies to d's task's status.progress, under IngestFieldManager, what the task shows
// (its status with the pushed entries over it, deleted types left out) and the progressSummary
// of that (so the controller has nothing left to write), if the task named is
// still the one pushed for and that differs from its status. Entries no writer here holds keep
// their written values: a replica that starts over (a new leader) loses nothing the status has.
func (f *flusher) write(ctx context.Context, d *due) error {
	it := f.tasks.ByName(d.key.Namespace, d.key.Name)
	if it == nil || it.task.UID != d.uid {
		f.live.forget(d.uid) // deleted or replaced: nothing to write into
		return nil
	}
	entries, differs := f.live.toWrite(d, it.task.Status.Progress)
	if !differs {
		return nil
	}
	if entries == nil {
		entries = []workflowv1alpha1.ProgressEntry{}
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": workflowv1alpha1.GroupVersion.String(), "kind": "WorkflowTask",
		"metadata": map[string]any{"name": d.key.Name, "namespace": d.key.Namespace},
		// The summary the controller derives from progress, derived the same way in the same
		// write: else each write here wakes the controller to write it (a second write on
		// kube-apiserver per flush, outside the budget).
		"status": map[string]any{"progress": entries, "progressSummary": workflowv1alpha1.ProgressSummary(entries)},
	})
	if err != nil {
		return fmt.Errorf("encoding the progress of %s: %w", d.key, err)
	}
	task := &workflowv1alpha1.WorkflowTask{}
	task.Name, task.Namespace = d.key.Name, d.key.Namespace
	if err := f.client.Status().Patch(ctx, task, client.RawPatch(types.ApplyPatchType, body),
		client.FieldOwner(IngestFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing the progress of %s: %w", d.key, err)
	}
	return nil
}
