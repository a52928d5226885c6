// Package progress reports a WorkflowTask's progress from its job pods.
//
// A Reporter records progress in memory (Set, Add, SetIdentifier, Delete: lock-free, no
// allocation, never waiting on the network) and a background loop writes it to the task's
// status subresource: at most once per interval, only when something changed, as a
// server-side apply that carries exactly this writer's entries under its own field manager.
// Parallel writers (threads of one pod, several pods of one task) therefore never overwrite
// each other and never merge what they read (each write reads the task only to check it is
// still the same object, below). Failures are retried with backoff and jitter;
// only the latest values are kept. Close makes a final write and says whether it landed.
//
// In a job pod, NewFromEnvironment needs no configuration: the controller injects the task's
// identity (WORKFLOWTASK_* variables) and either the operator's push target (when the operator
// takes pushes, --progress-ingest: the pod has no API rights at all and pushes its whole state,
// with its projected token, to the operator, which shows it at once and writes the status
// within its budget; see pkg/progress/ingest) or nothing more (the pod runs as the task's
// runner ServiceAccount, which may patch this task's status and nothing else, and writes it).
// Both paths keep the promises below; Client makes the CLI's one-entry changes by the same
// paths.
//
// Every write is bound to one task object, not just to a name: a pod of a deleted task must
// never write into a new task of the same name. The reporter writes for Options.UID
// ($WORKFLOWTASK_UID in a pod; when empty, the UID the first read finds, pinned for the
// reporter's life). Each write reads the task's status, checks its metadata.uid, and applies on
// the condition that the task's resourceVersion is still the one read (the API server ignores
// metadata.uid in a patch of the status subresource, so the resourceVersion is what makes the
// check atomic; a conflict, e.g. with another writer, is read again and retried at once, up to
// 5 times). A task with another UID is permanent: the reporter stops writing (no retry), logs
// it once, keeps accepting updates, and Flush, Err and Close return an error matching
// ErrTaskReplaced.
package progress

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Defaults.
const (
	DefaultInterval   = time.Second
	DefaultMaxBackoff = 30 * time.Second
	// DefaultMaxInterval caps how far the interval stretches while the API server pushes back.
	DefaultMaxInterval = 30 * time.Second
	// SlowWrite is how long a write may take before it counts as the API server being
	// saturated (when the interval is shorter; a healthy server answers in milliseconds).
	SlowWrite = 250 * time.Millisecond
	// DefaultRequestTimeout bounds one write.
	DefaultRequestTimeout = 10 * time.Second
	// FieldManagerPrefix starts the field manager of every reporter.
	FieldManagerPrefix = "workflowtask-progress"
)

// Options configure a Reporter.
type Options struct {
	// Config reaches the API server as the task's runner: the status is written directly.
	// Config or Ingest is required for New.
	Config *rest.Config
	// Ingest, when set, pushes to the operator instead (Config is not used): the operator keeps
	// the values, shows them at once, and writes them to the status within its budget. UID is
	// then required. NewFromEnvironment sets it when the controller injected the target.
	Ingest *IngestTarget
	// Namespace and Task name the task to report to. Required for New.
	Namespace, Task string
	// FieldManager names this writer; each writer of a task needs its own. Default:
	// "workflowtask-progress/<pod name>" (WORKFLOWTASK_POD_NAME, else the host name).
	FieldManager string
	// Interval is the shortest time between two writes. Default: $WORKFLOWTASK_PROGRESS_INTERVAL
	// with NewFromEnvironment (the operator's --progress-interval), else 1s.
	Interval time.Duration
	// MaxInterval is how far the interval may stretch while the API server pushes back: each
	// write refused with 429 (API Priority and Fairness) or slower than max(Interval, SlowWrite)
	// doubles it, each other successful write brings it halfway back to Interval. Progress then
	// arrives less often under load, never lost: only the latest values are kept and written.
	// Default max(30s, Interval).
	MaxInterval time.Duration
	// MaxBackoff caps the wait between retries of a failing write. Default 30s.
	MaxBackoff time.Duration
	// RequestTimeout bounds each write. Default 10s.
	RequestTimeout time.Duration
	// Logger receives write failures (at most one line per distinct failure in a row).
	Logger logr.Logger
	// UID is the metadata.uid of the task to report to: every write is made on the condition
	// that the task named Namespace/Task is still this object, so a pod of a deleted task never
	// writes into a new task of the same name (the writes fail with ErrTaskReplaced instead).
	// NewFromEnvironment fills it from $WORKFLOWTASK_UID. When empty (a program run outside a
	// task's pod), the reporter reads the task before its first write and pins the UID it finds
	// for its whole life.
	UID types.UID
}

// ErrTaskReplaced is matched (errors.Is) by the error of every write, Flush and Close of a
// reporter whose task was deleted and re-created under the same name (the task now has another
// UID than Options.UID, or than the one pinned by the first read). It is permanent: the
// reporter writes nothing more, and only logs it once.
var ErrTaskReplaced = errors.New("the task was deleted and re-created")

// Reporter reports the progress of one task from one writer. All methods are safe for
// concurrent use. The zero value is not usable; use New or NewFromEnvironment.
type Reporter struct {
	opts     Options
	writer   *writer
	entries  atomic.Pointer[map[string]*Entry] // copy-on-write: readers never lock
	mu       sync.Mutex                        // serializes changes to entries
	dirty    atomic.Bool
	closed   atomic.Bool
	kick     chan struct{}
	flushes  chan chan error
	stop     chan struct{}
	done     chan struct{}
	lastErr  atomic.Pointer[error]
	replaced atomic.Pointer[error] // set once the task was replaced: nothing more is written
	unsent   atomic.Bool           // the last write failed: the server is behind
	failures atomic.Int32          // failed writes in a row, for logging
	dropped  atomic.Int64
	interval atomic.Int64 // the current write interval (adapted to the API server's pushback)
	resend   atomic.Int64 // how soon to send the unchanged state again (pushed, not yet written)
}

// New starts a Reporter for the task in opts.
func New(opts Options) (*Reporter, error) {
	if opts.Config == nil && opts.Ingest == nil || opts.Namespace == "" || opts.Task == "" {
		return nil, errors.New("progress: Options.Config (or Ingest), Namespace and Task are required")
	}
	if opts.FieldManager == "" {
		opts.FieldManager = DefaultFieldManager("")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxBackoff < opts.Interval {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.Interval)
	}
	if opts.MaxInterval < opts.Interval {
		opts.MaxInterval = max(DefaultMaxInterval, opts.Interval)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	w, err := newWriter(opts)
	if err != nil {
		return nil, err
	}
	r := &Reporter{
		opts: opts, writer: w,
		kick: make(chan struct{}, 1), flushes: make(chan chan error),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	empty := map[string]*Entry{}
	r.entries.Store(&empty)
	r.interval.Store(int64(opts.Interval))
	go r.loop()
	return r, nil
}

// NewFromEnvironment starts a Reporter configured from the environment a task's pod gets:
// WORKFLOWTASK_NAME and WORKFLOWTASK_NAMESPACE name the task, WORKFLOWTASK_UID is its UID (see
// Options.UID), and it pushes to WORKFLOWTASK_PROGRESS_URL with the projected token in
// WORKFLOWTASK_PROGRESS_TOKEN_FILE when the controller injected them (the operator takes
// pushes), else the in-cluster config (the runner ServiceAccount's token, re-read when the
// kubelet rotates it) reaches the API server; outside a cluster, KUBECONFIG is used instead.
// Fields set in opts take precedence.
func NewFromEnvironment(opts Options) (*Reporter, error) {
	if opts.Task == "" {
		opts.Task = os.Getenv(workflowv1alpha1.EnvTaskName)
	}
	if opts.Namespace == "" {
		opts.Namespace = os.Getenv(workflowv1alpha1.EnvTaskNamespace)
	}
	if opts.UID == "" {
		opts.UID = types.UID(os.Getenv(workflowv1alpha1.EnvTaskUID))
	}
	if opts.Interval == 0 {
		d, err := IntervalFromEnvironment()
		if err != nil {
			return nil, err
		}
		opts.Interval = d
	}
	if opts.Task == "" || opts.Namespace == "" {
		return nil, fmt.Errorf("progress: %s and %s must be set (the controller sets them in a task's pods)",
			workflowv1alpha1.EnvTaskName, workflowv1alpha1.EnvTaskNamespace)
	}
	if err := TargetFromEnvironment(&opts); err != nil {
		return nil, err
	}
	return New(opts)
}

// TargetFromEnvironment fills where opts writes to when neither Config nor Ingest is set: the
// ingest target the controller injected (the operator takes pushes), else the in-cluster
// config (or KUBECONFIG's).
func TargetFromEnvironment(opts *Options) error {
	if opts.Config != nil || opts.Ingest != nil {
		return nil
	}
	target, err := IngestTargetFromEnvironment()
	if err != nil || target != nil {
		opts.Ingest = target
		return err
	}
	cfg, err := ConfigFromEnvironment()
	opts.Config = cfg
	return err
}

// IntervalFromEnvironment is $WORKFLOWTASK_PROGRESS_INTERVAL (set in a task's containers by the
// operator's --progress-interval, or by the task itself), else DefaultInterval. A value that is
// not a positive duration is an error naming the variable.
func IntervalFromEnvironment() (time.Duration, error) {
	v := os.Getenv(workflowv1alpha1.EnvProgressInterval)
	if v == "" {
		return DefaultInterval, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("progress: %s=%q is not a positive duration", workflowv1alpha1.EnvProgressInterval, v)
	}
	return d, nil
}

// ConfigFromEnvironment is the in-cluster config, or KUBECONFIG's when that is set.
func ConfigFromEnvironment() (*rest.Config, error) {
	if path := os.Getenv("KUBECONFIG"); path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("progress: loading KUBECONFIG %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("progress: no in-cluster config and no KUBECONFIG: %w", err)
	}
	return cfg, nil
}

// DefaultFieldManager is "workflowtask-progress/<pod>[/<suffix>]", where <pod> is
// WORKFLOWTASK_POD_NAME or else the host name (a pod's host name is its name).
func DefaultFieldManager(suffix string) string {
	pod := os.Getenv(workflowv1alpha1.EnvPodName)
	if pod == "" {
		pod, _ = os.Hostname()
	}
	fm := FieldManagerPrefix + "/" + pod
	if suffix != "" {
		fm += "/" + suffix
	}
	if len(fm) > 128 { // the API's limit on field manager names
		fm = fm[:128]
	}
	return fm
}

// Entry returns the entry of a progress type, creating it on first use. It fails for a type the
// API would refuse, after Close, and past MaxEntries types.
func (r *Reporter) Entry(typ string) (*Entry, error) {
	if e := (*r.entries.Load())[typ]; e != nil {
		return e, nil
	}
	if !ValidType(typ) {
		return nil, fmt.Errorf("progress: invalid type %q: want lower-case snake_case, at most 63 characters", typ)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.entries.Load()
	if e := cur[typ]; e != nil {
		return e, nil
	}
	if r.closed.Load() {
		return nil, errors.New("progress: reporter is closed")
	}
	if len(cur) >= MaxEntries {
		return nil, fmt.Errorf("progress: at most %d types per task", MaxEntries)
	}
	next := maps.Clone(cur)
	e := &Entry{typ: typ, r: r}
	next[typ] = e
	r.entries.Store(&next)
	return e, nil
}

// entryOrDrop is Entry for the convenience calls, which have no error to return: a refused
// type is counted (Dropped) and logged once.
func (r *Reporter) entryOrDrop(typ string) *Entry {
	e, err := r.Entry(typ)
	if err != nil {
		if r.dropped.Add(1) == 1 {
			r.opts.Logger.Error(err, "Dropping progress update")
		}
		return nil
	}
	return e
}

// Set records current and total of a type.
func (r *Reporter) Set(typ string, current, total int64) {
	if e := r.entryOrDrop(typ); e != nil {
		e.Set(current, total)
	}
}

// Add adds delta to the current of a type.
func (r *Reporter) Add(typ string, delta int64) {
	if e := r.entryOrDrop(typ); e != nil {
		e.Add(delta)
	}
}

// SetIdentifier records the identifier of a type (e.g. an upload thread's destination).
func (r *Reporter) SetIdentifier(typ, id string) {
	if e := r.entryOrDrop(typ); e != nil {
		e.SetIdentifier(id)
	}
}

// Delete removes a type: the next write leaves it out, which removes this writer's entry (and
// only this writer's) from the task. Entries from Entry(typ) stop reporting.
func (r *Reporter) Delete(typ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.entries.Load()
	e := cur[typ]
	if e == nil {
		return
	}
	next := maps.Clone(cur)
	delete(next, typ)
	e.deleted.Store(true)
	r.entries.Store(&next)
	r.markDirty()
}

// Stats are the reporter's write attempts so far, by result, and the bytes sent (for metrics:
// pkg/progress/progressmetrics exposes them to Prometheus).
func (r *Reporter) Stats() Stats {
	s := r.writer.stats
	return Stats{OK: s.ok.Load(), Conflict: s.conflict.Load(), Throttled: s.throttled.Load(), Error: s.failed.Load(), Bytes: s.bytes.Load(),
		Interval: time.Duration(r.interval.Load())}
}

// Dropped is how many updates were refused (invalid type, too many types, after Close).
func (r *Reporter) Dropped() int64 { return r.dropped.Load() }

// Err is the error of the last write, nil when it succeeded (or none was made yet). Once the
// task was replaced (ErrTaskReplaced), it is that error for good.
func (r *Reporter) Err() error {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// markDirty notes a change and wakes the loop when it was idle. Only the first change after a
// write touches the channel.
func (r *Reporter) markDirty() {
	if r.dirty.Load() || !r.dirty.CompareAndSwap(false, true) {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Flush writes the current state now (ignoring the interval) and returns the write's error.
// It returns ctx's error if ctx ends first; the write then still happens in the background.
// Once the task was replaced, it returns that error (matching ErrTaskReplaced) at once.
func (r *Reporter) Flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.flushes <- reply:
	case <-r.done:
		return errors.New("progress: reporter is closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the reporter after a final write of the current state, retried with backoff
// until ctx ends. It returns nil when the final state is in the task's status (or there was
// nothing to write) — pushed to the operator, once the operator has written it — and otherwise
// an error saying it is not; when the task was deleted and re-created,
// at once, an error matching ErrTaskReplaced. Calls after Close are ignored.
func (r *Reporter) Close(ctx context.Context) error {
	if r.closed.Swap(true) {
		<-r.done
		return r.Err()
	}
	close(r.stop)
	<-r.done
	return r.finalWrite(ctx)
}
