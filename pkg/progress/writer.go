package progress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// maxConflicts bounds how often one write reads the task again after a conflict (another
// writer, or the controller, changed the task between the read and the apply) before it counts
// as a failed write, retried with backoff.
const maxConflicts = 5

// writer sends a reporter's state as a server-side apply of the task's status subresource,
// conditioned on the task still being the object with the writer's UID.
type writer struct {
	rc   *rest.RESTClient
	opts Options
	// uid is the task's UID: Options.UID, or the one the first read found. Only the loop (then
	// Close) uses it, as sent below.
	uid types.UID
	// sent remembers, per entry, the version last sent and the update time given to it, so an
	// entry that did not change keeps its update time. Only the loop (then Close) uses it.
	sent map[*Entry]sentEntry
	// stats count write attempts by result, and the bytes sent.
	stats struct{ ok, conflict, throttled, failed, bytes atomic.Int64 }
}

// Stats are a reporter's write attempts since it started, by result, and the bytes it sent.
// An attempt is one read of the task and, unless that fails, one apply.
type Stats struct {
	// OK attempts landed; Conflict ones met a change of the task in between (read again and
	// retried at once); Throttled ones were refused with 429 (API Priority and Fairness);
	// Error ones failed otherwise.
	OK, Conflict, Throttled, Error int64
	// Bytes is the size of the apply bodies sent.
	Bytes int64
	// Interval is the current shortest time between two writes: Options.Interval, stretched
	// up to Options.MaxInterval while the API server pushes back.
	Interval time.Duration
}

// count records the result of one attempt.
func (w *writer) count(err error) {
	switch {
	case err == nil:
		w.stats.ok.Add(1)
	case apierrors.IsConflict(err):
		w.stats.conflict.Add(1)
	case apierrors.IsTooManyRequests(err):
		w.stats.throttled.Add(1)
	default:
		w.stats.failed.Add(1)
	}
}

type sentEntry struct {
	version    uint64
	updateTime metav1.MicroTime
}

func newWriter(opts Options) (*writer, error) {
	cfg := rest.CopyConfig(opts.Config)
	cfg.QPS = -1 // the loop bounds the write rate itself
	rc, err := NewRESTClient(cfg)
	if err != nil {
		return nil, err
	}
	return &writer{rc: rc, opts: opts, uid: opts.UID, sent: map[*Entry]sentEntry{}}, nil
}

// NewRESTClient is a client for WorkflowTasks (and their status) in the workflow.taskops.dev
// API, for the reporter and the CLI. A bearer token file (a pod's projected token) is read
// through a resettable source: client-go re-reads a token file only once a minute and ignores a
// 401, while the kubelet rotates the token in place; here a 401 makes the next request read the
// file again, so a rotated token works from the next retry on.
func NewRESTClient(cfg *rest.Config) (*rest.RESTClient, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/apis"
	cfg.GroupVersion = &workflowv1alpha1.GroupVersion
	cfg.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "workflowtask-progress"
	}
	if path := cfg.BearerTokenFile; path != "" {
		cfg.BearerTokenFile, cfg.BearerToken = "", ""
		cfg.Wrap(transport.ResettableTokenSourceWrapTransport(transport.NewCachedFileTokenSource(path)))
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("progress: building the API client: %w", err)
	}
	return rc, nil
}

// ApplyBody is the server-side apply configuration of a task's status.progress: exactly the
// given entries (one writer's), nothing else of the task — an empty list releases the writer's
// entries. uid names the object meant (the API server ignores metadata.uid in a patch of the
// status subresource); resourceVersion, when not empty, is the condition the apply is made on.
// The reporter, the CLI and the tests all write progress with it.
func ApplyBody(namespace, task string, uid types.UID, resourceVersion string, entries []workflowv1alpha1.ProgressEntry) ([]byte, error) {
	if entries == nil {
		entries = []workflowv1alpha1.ProgressEntry{}
	}
	type meta struct {
		Name            string    `json:"name"`
		Namespace       string    `json:"namespace"`
		UID             types.UID `json:"uid,omitempty"`
		ResourceVersion string    `json:"resourceVersion,omitempty"`
	}
	type status struct {
		Progress []workflowv1alpha1.ProgressEntry `json:"progress"`
	}
	return json.Marshal(struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   meta   `json:"metadata"`
		Status     status `json:"status"`
	}{workflowv1alpha1.GroupVersion.String(), "WorkflowTask", meta{task, namespace, uid, resourceVersion}, status{entries}})
}

// body is the apply configuration: exactly this writer's entries, nothing else of the task,
// with the task's UID and, when not empty, the resourceVersion the apply is conditioned on.
// (The API server checks the resourceVersion; it ignores metadata.uid in a patch of the status
// subresource, which is sent all the same: it names the object the write is meant for.)
func (w *writer) body(entries map[string]*Entry, now time.Time, resourceVersion string) ([]byte, error) {
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
	return ApplyBody(w.opts.Namespace, w.opts.Task, w.uid, resourceVersion, list)
}

// taskMeta is what a write needs of the task it reads.
type taskMeta struct {
	Metadata struct {
		UID             types.UID `json:"uid"`
		ResourceVersion string    `json:"resourceVersion"`
	} `json:"metadata"`
}

// read reads the task's status and returns its resourceVersion, after checking that the task
// is still the one this writer writes for (pinning its UID on the first read when none was
// given). A task with another UID is an error matching ErrTaskReplaced; refused is the API
// server's refusal that led to this read, if any, and is wrapped too.
func (w *writer) read(ctx context.Context, refused error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
	defer cancel()
	res := w.rc.Get().Namespace(w.opts.Namespace).Resource("workflowtasks").Name(w.opts.Task).SubResource("status").
		MaxRetries(0).Do(ctx)
	if err := res.Error(); err != nil { // (Raw's error would not carry the API server's message)
		return "", fmt.Errorf("progress: reading task %s/%s: %w", w.opts.Namespace, w.opts.Task, err)
	}
	raw, _ := res.Raw()
	var got taskMeta
	if err := json.Unmarshal(raw, &got); err != nil {
		return "", fmt.Errorf("progress: reading task %s/%s: %w", w.opts.Namespace, w.opts.Task, err)
	}
	if got.Metadata.UID == "" {
		return "", fmt.Errorf("progress: reading task %s/%s: no metadata.uid in the answer", w.opts.Namespace, w.opts.Task)
	}
	switch {
	case w.uid == "":
		w.uid = got.Metadata.UID
	case got.Metadata.UID != w.uid:
		err := fmt.Errorf("progress: task %s/%s: %w (it has UID %s now; this reporter writes for UID %s): nothing more is written",
			w.opts.Namespace, w.opts.Task, ErrTaskReplaced, got.Metadata.UID, w.uid)
		if refused != nil {
			err = fmt.Errorf("%w: %w", err, refused)
		}
		return "", err
	}
	return got.Metadata.ResourceVersion, nil
}

// write sends the entries once: it reads the task (its UID must be the writer's), then applies
// on the condition that the task's resourceVersion is still the one read, so the check and the
// write are atomic. A conflict (the task changed in between: another writer, the controller,
// or the task replaced) reads again, at most maxConflicts times.
func (w *writer) write(ctx context.Context, entries map[string]*Entry, now time.Time) error {
	var refused error
	for range maxConflicts {
		rv, err := w.read(ctx, refused)
		if err != nil {
			w.count(err)
			return err
		}
		body, err := w.body(entries, now, rv)
		if err != nil {
			return err
		}
		w.stats.bytes.Add(int64(len(body)))
		err = w.apply(ctx, body)
		w.count(err)
		if err == nil || !apierrors.IsConflict(err) {
			return err
		}
		refused = err
	}
	return refused
}

// apply sends one server-side apply. force takes over entries another writer held last (the
// same type written from two places): the latest writer wins, as with any status field.
func (w *writer) apply(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
	defer cancel()
	err := w.rc.Patch(types.ApplyPatchType).
		Namespace(w.opts.Namespace).Resource("workflowtasks").Name(w.opts.Task).SubResource("status").
		Param("fieldManager", w.opts.FieldManager).Param("force", "true").
		MaxRetries(0).Body(body).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("progress: writing task %s/%s as %q: %w", w.opts.Namespace, w.opts.Task, w.opts.FieldManager, err)
	}
	return nil
}

// send writes the current state once. Once the task was replaced it writes nothing and
// returns that error (leaving dirty set, so updates no longer wake the loop).
func (r *Reporter) send(ctx context.Context) error {
	if p := r.replaced.Load(); p != nil {
		return *p
	}
	r.dirty.Store(false) // changes from here on mark it again and are sent next time
	err := r.writer.write(ctx, *r.entries.Load(), time.Now())
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
	)
	for {
		var reply chan error
		if !pending {
			select {
			case <-r.stop:
				return
			case reply = <-r.flushes:
			case <-r.kick: // something changed: send it
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
		err := r.send(ctx)
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

// finalWrite is Close's last write: only when something was not written yet, retried until
// ctx ends.
func (r *Reporter) finalWrite(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		if p := r.replaced.Load(); p != nil {
			return fmt.Errorf("progress: final state NOT written: %w", *p)
		}
		if !r.dirty.Load() && !r.unsent.Load() {
			return nil
		}
		err := r.send(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrTaskReplaced) {
			continue // returned above
		}
		t := time.NewTimer(retryWait(err, backoff(r.opts.Interval, r.opts.MaxBackoff, attempt)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("progress: final state NOT written before the deadline: %w", err)
		case <-t.C:
		}
	}
}

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
