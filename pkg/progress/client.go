package progress

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// Client changes one entry of a task's progress at a time (the CLI's set, add and delete), by
// the path a Reporter writes: the task's status directly (each change read from the task,
// computed, and applied on the condition that the task did not change meanwhile), or pushed to
// the operator (which computes it from what the task shows, atomically). Each change is made
// for the task with Options.UID (or the UID its first read finds, directly): a pod of a
// deleted task never writes into a new task of the same name (ErrTaskReplaced).
type Client struct {
	sink sink
	fm   string
}

// NewClient is a Client for the task in opts (Config or Ingest, Namespace, Task, UID;
// FieldManager, when empty, is DefaultFieldManager(type) per change: separate commands for
// separate types never take away each other's entries).
func NewClient(opts Options) (*Client, error) {
	if opts.Config == nil && opts.Ingest == nil || opts.Namespace == "" || opts.Task == "" {
		return nil, fmt.Errorf("progress: Options.Config (or Ingest), Namespace and Task are required")
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	s, err := newSink(opts, &counters{})
	if err != nil {
		return nil, err
	}
	return &Client{sink: s, fm: opts.FieldManager}, nil
}

// Apply sets or deletes one entry; a value left out (HasTotal, HasIdentifier false) keeps what
// the entry has.
func (c *Client) Apply(ctx context.Context, u Update) error {
	ch := ingest.Change{Type: u.Type, Delete: u.Delete}
	if !u.Delete {
		ch.Current = &u.Current
		if u.HasTotal {
			ch.Total = &u.Total
		}
		if u.HasIdentifier {
			ch.Identifier = &u.Identifier
		}
	}
	return c.change(ctx, ch)
}

// Add adds delta to an entry's current (floored at 0), creating the entry when the task has none.
func (c *Client) Add(ctx context.Context, typ string, delta int64) error {
	if !ValidType(typ) {
		return fmt.Errorf("progress: invalid type %q", typ)
	}
	return c.change(ctx, ingest.Change{Type: typ, Add: &delta})
}

// change sends ch, again after a refusal that asks to wait (429 with Retry-After: API Priority
// and Fairness, or the operator's per-pod budget) or a passing server error, until ctx ends.
func (c *Client) change(ctx context.Context, ch ingest.Change) error {
	fm := c.fm
	if fm == "" {
		fm = DefaultFieldManager(ch.Type)
	}
	for attempt := 1; ; attempt++ {
		err := c.sink.change(ctx, ch, fm)
		if err == nil || !passing(err) {
			return err
		}
		t := time.NewTimer(retryWait(err, backoff(changeBackoff, DefaultMaxBackoff, attempt)))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// changeBackoff is the first wait before a one-entry change is sent again.
const changeBackoff = 200 * time.Millisecond

// passing tells a refusal worth retrying: throttled, or the server briefly unable to answer.
func passing(err error) bool {
	return apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsInternalError(err)
}
