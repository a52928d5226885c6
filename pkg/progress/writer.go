package progress

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// writer turns a reporter's entries into the list it sends, through its sink: the task's
// status directly, or the operator's ingest endpoint.
type writer struct {
	sink sink
	// sent remembers, per entry, the version last sent and the update time given to it, so an
	// entry that did not change keeps its update time. Only the loop (then Close) uses it.
	sent map[*Entry]sentEntry
	// stats count write attempts by result, and the bytes sent.
	stats *counters
}

// counters count a sink's attempts by result and the bytes it sent.
type counters struct{ ok, conflict, throttled, failed, bytes atomic.Int64 }

// count records the result of one attempt.
func (c *counters) count(err error) {
	switch {
	case err == nil:
		c.ok.Add(1)
	case apierrors.IsConflict(err):
		c.conflict.Add(1)
	case apierrors.IsTooManyRequests(err):
		c.throttled.Add(1)
	default:
		c.failed.Add(1)
	}
}

// Stats are a reporter's write attempts since it started, by result, and the bytes it sent.
// An attempt is one read of the task and, unless that fails, one apply (or one push).
type Stats struct {
	// OK attempts landed; Conflict ones met a change of the task in between (read again and
	// retried at once); Throttled ones were refused with 429 (API Priority and Fairness, or the
	// operator's per-pod budget); Error ones failed otherwise.
	OK, Conflict, Throttled, Error int64
	// Bytes is the size of the bodies sent.
	Bytes int64
	// Interval is the current shortest time between two writes: Options.Interval, stretched
	// up to Options.MaxInterval while the server pushes back.
	Interval time.Duration
}

type sentEntry struct {
	version    uint64
	updateTime metav1.MicroTime
}

// newWriter is a writer through the sink opts name: Ingest when set, else Config.
func newWriter(opts Options) (*writer, error) {
	stats := &counters{}
	s, err := newSink(opts, stats)
	if err != nil {
		return nil, err
	}
	return &writer{sink: s, sent: map[*Entry]sentEntry{}, stats: stats}, nil
}

// list is the entries as sent, sorted by type; an entry that did not change since it was last
// sent keeps its update time.
func (w *writer) list(entries map[string]*Entry, now time.Time) []workflowv1alpha1.ProgressEntry {
	list := make([]workflowv1alpha1.ProgressEntry, 0, len(entries))
	seen := make(map[*Entry]sentEntry, len(entries))
	for _, e := range entries {
		v := e.version.Load()
		s, ok := w.sent[e]
		if !ok || s.version != v {
			s = sentEntry{version: v, updateTime: metav1.NewMicroTime(now)}
		}
		seen[e] = s
		pe := workflowv1alpha1.ProgressEntry{Type: e.typ, Current: e.current.Load(), Total: e.total.Load(), UpdateTime: &s.updateTime}
		if id := e.identifier.Load(); id != nil {
			pe.Identifier = *id
		}
		list = append(list, pe)
	}
	w.sent = seen // forget deleted entries
	slices.SortFunc(list, func(a, b workflowv1alpha1.ProgressEntry) int { return strings.Compare(a.Type, b.Type) })
	return list
}

// send writes the current state once. Once the task was replaced it writes nothing and
// returns that error (leaving dirty set, so updates no longer wake the loop).
func (r *Reporter) send(ctx context.Context, final bool) error {
	if p := r.replaced.Load(); p != nil {
		return *p
	}
	r.dirty.Store(false) // changes from here on mark it again and are sent next time
	resend, err := r.writer.sink.put(ctx, r.writer.list(*r.entries.Load(), time.Now()), final)
	r.resend.Store(int64(resend))
	if err != nil {
		r.unsent.Store(true)
		r.lastErr.Store(&err)
		if errors.Is(err, ErrTaskReplaced) {
			r.replaced.Store(&err)
			r.opts.Logger.Error(err, "Task was deleted and re-created: this reporter writes nothing more")
			return err
		}
		if r.failures.Add(1) == 1 {
			r.opts.Logger.Error(err, "Progress write failed; retrying with backoff, keeping the latest values")
		}
		return err
	}
	r.unsent.Store(false)
	r.lastErr.Store(nil)
	if r.failures.Swap(0) > 0 {
		r.opts.Logger.Info("Progress write succeeded again")
	}
	return nil
}

// loop writes whenever something changed, at most once per interval, and retries failed
// writes with exponential backoff and jitter. It never blocks the callers: they only flip an
// atomic flag and, on the first change after a write, do a non-blocking send on kick.
func (r *Reporter) loop() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.stop
		cancel()
	}()
	var (
		nextAllowed time.Time
		pending     bool
		failures    int
		interval    = r.opts.Interval
		resend      = time.NewTimer(0) // the operator did not write the pushed values yet: send them again
	)
	<-resend.C
	defer resend.Stop()
	for {
		var reply chan error
		if !pending {
			select {
			case <-r.stop:
				return
			case reply = <-r.flushes:
			case <-r.kick: // something changed: send it
			case <-resend.C:
			}
		}
		if reply == nil {
			if d := time.Until(nextAllowed); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-r.stop:
					t.Stop()
					return
				case reply = <-r.flushes:
					t.Stop()
				case <-t.C:
				}
			}
		}
		start := time.Now()
		resend.Stop()
		err := r.send(ctx, false)
		if reply != nil {
			reply <- err
		}
		if r.replaced.Load() != nil { // permanent: no retry, only flushes are answered
			pending = false
			continue
		}
		interval = adapt(interval, r.opts.Interval, r.opts.MaxInterval, err, time.Since(start))
		r.interval.Store(int64(interval))
		if err != nil {
			failures++
			pending = true
			nextAllowed = time.Now().Add(retryWait(err, backoff(interval, r.opts.MaxBackoff, failures)))
			continue
		}
		failures, pending = 0, false
		nextAllowed = time.Now().Add(interval)
		if d := time.Duration(r.resend.Load()); d > 0 {
			resend.Reset(d)
		}
	}
}

// adapt is the write interval after a write that lasted took and ended with err: doubled (up to
// maxInterval) when the API server pushed back — a 429, or a write slower than
// max(base, SlowWrite) — unchanged after another failure (backoff handles it), and halfway back
// to base after a write that went well (base itself once within an eighth of it).
func adapt(cur, base, maxInterval time.Duration, err error, took time.Duration) time.Duration {
	switch {
	case apierrors.IsTooManyRequests(err) || took > max(base, SlowWrite):
		return min(cur*2, maxInterval)
	case err != nil:
		return cur
	}
	next := base + (cur-base)/2
	if next-base < base/8 {
		return base
	}
	return next
}

// retryWait is how long to wait before retrying after err: the backoff, or longer when the
// API server asked for it (Retry-After on a 429 from API Priority and Fairness, or a timeout).
func retryWait(err error, backoff time.Duration) time.Duration {
	if s, ok := apierrors.SuggestsClientDelay(err); ok {
		return max(backoff, time.Duration(s)*time.Second)
	}
	return backoff
}

// finalWrite is Close's last write: only when something is not in the status yet — not sent,
// or pushed and not written by the operator (pending) — retried until ctx ends. A pushed final
// state is sent again, unchanged, until the operator answers that it is written: this process
// is about to end, and values held only by an operator replica that dies first would be lost.
func (r *Reporter) finalWrite(ctx context.Context) error {
	failures, pending := 0, 0
	for {
		if p := r.replaced.Load(); p != nil {
			return fmt.Errorf("progress: final state NOT written: %w", *p)
		}
		if !r.dirty.Load() && !r.unsent.Load() && r.resend.Load() == 0 {
			return nil
		}
		err := r.send(ctx, true)
		var wait time.Duration
		switch {
		case err == nil && r.resend.Load() == 0:
			return nil
		case err == nil: // pushed, not written yet: ask again soon (a final value is written first)
			pending++
			wait = backoff(finalResend, time.Duration(r.resend.Load()), pending)
			err = errFinalPending
		case errors.Is(err, ErrTaskReplaced):
			continue // returned above
		default:
			failures++
			wait = retryWait(err, backoff(r.opts.Interval, r.opts.MaxBackoff, failures))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("progress: final state NOT written before the deadline: %w", err)
		case <-t.C:
		}
	}
}

// finalResend is the first wait before a final state the operator took but did not write yet
// is sent again (then doubled, up to the operator's resendAfterSeconds).
const finalResend = 500 * time.Millisecond

// errFinalPending: the operator took the final state and has not written it to the status yet.
var errFinalPending = errors.New("the operator has not written it to the status yet")

// backoff is interval·2^(failures-1), capped at maxBackoff, with ±20% jitter so that many
// reporters recovering together do not write in lockstep.
func backoff(interval, maxBackoff time.Duration, failures int) time.Duration {
	d := interval
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
