package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// writer sends a reporter's state as a server-side apply of the task's status subresource.
type writer struct {
	rc   *rest.RESTClient
	opts Options
	// sent remembers, per entry, the version last sent and the update time given to it, so an
	// entry that did not change keeps its update time. Only the loop (then Close) uses it.
	sent map[*Entry]sentEntry
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
	return &writer{rc: rc, opts: opts, sent: map[*Entry]sentEntry{}}, nil
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

// applyEntry is one progress entry as applied.
type applyEntry struct {
	Type       string           `json:"type"`
	Current    int64            `json:"current"`
	Total      int64            `json:"total"`
	Identifier string           `json:"identifier,omitempty"`
	UpdateTime metav1.MicroTime `json:"updateTime"`
}

// body is the apply configuration: exactly this writer's entries, nothing else of the task.
func (w *writer) body(entries map[string]*Entry, now time.Time) ([]byte, error) {
	list := make([]applyEntry, 0, len(entries))
	seen := make(map[*Entry]sentEntry, len(entries))
	for _, e := range entries {
		v := e.version.Load()
		s, ok := w.sent[e]
		if !ok || s.version != v {
			s = sentEntry{version: v, updateTime: metav1.NewMicroTime(now)}
		}
		seen[e] = s
		ae := applyEntry{Type: e.typ, Current: e.current.Load(), Total: e.total.Load(), UpdateTime: s.updateTime}
		if id := e.identifier.Load(); id != nil {
			ae.Identifier = *id
		}
		list = append(list, ae)
	}
	w.sent = seen // forget deleted entries
	slices.SortFunc(list, func(a, b applyEntry) int { return strings.Compare(a.Type, b.Type) })
	return json.Marshal(map[string]any{
		"apiVersion": workflowv1alpha1.GroupVersion.String(),
		"kind":       "WorkflowTask",
		"metadata":   map[string]string{"name": w.opts.Task, "namespace": w.opts.Namespace},
		"status":     map[string]any{"progress": list},
	})
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

// send writes the current state once.
func (r *Reporter) send(ctx context.Context) error {
	r.dirty.Store(false) // changes from here on mark it again and are sent next time
	body, err := r.writer.body(*r.entries.Load(), time.Now())
	if err == nil {
		err = r.writer.apply(ctx, body)
	}
	if err != nil {
		r.unsent.Store(true)
		r.lastErr.Store(&err)
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
	)
	for {
		var reply chan error
		if !pending {
			select {
			case <-r.stop:
				return
			case reply = <-r.flushes:
			case <-r.kick:
				pending = true
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
		err := r.send(ctx)
		if reply != nil {
			reply <- err
		}
		if err != nil {
			failures++
			pending = true
			nextAllowed = time.Now().Add(backoff(r.opts.Interval, r.opts.MaxBackoff, failures))
			continue
		}
		failures, pending = 0, false
		nextAllowed = time.Now().Add(r.opts.Interval)
	}
}

// finalWrite is Close's last write: only when something was not written yet, retried until
// ctx ends.
func (r *Reporter) finalWrite(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		if !r.dirty.Load() && !r.unsent.Load() {
			return nil
		}
		err := r.send(ctx)
		if err == nil {
			return nil
		}
		t := time.NewTimer(backoff(r.opts.Interval, r.opts.MaxBackoff, attempt))
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
