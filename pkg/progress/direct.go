package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// maxConflicts bounds how often one write reads the task again after a conflict (another
// writer, or the controller, changed the task between the read and the apply) before it counts
// as a failed write, retried with backoff.
const maxConflicts = 5

// directSink writes into the task's status subresource on kube-apiserver, as the task's runner:
// a server-side apply of exactly the writer's entries under its field manager, conditioned on
// the task still being the object with the writer's UID.
type directSink struct {
	rc                  *rest.RESTClient
	namespace, task, fm string
	timeout             time.Duration
	stats               *counters
	// uid is the task's UID: Options.UID, or the one the first read found. Only one goroutine
	// at a time uses a sink (the reporter's loop, then Close; a CLI command).
	uid types.UID
}

func newDirectSink(opts Options, stats *counters) (*directSink, error) {
	cfg := rest.CopyConfig(opts.Config)
	cfg.QPS = -1 // the loop bounds the write rate itself
	rc, err := NewRESTClient(cfg)
	if err != nil {
		return nil, err
	}
	return &directSink{rc: rc, namespace: opts.Namespace, task: opts.Task, fm: opts.FieldManager, timeout: opts.RequestTimeout,
		stats: stats, uid: opts.UID}, nil
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

// taskRead is what a write needs of the task it reads.
type taskRead struct {
	Metadata struct {
		UID             types.UID `json:"uid"`
		ResourceVersion string    `json:"resourceVersion"`
	} `json:"metadata"`
	Status struct {
		Progress []workflowv1alpha1.ProgressEntry `json:"progress"`
	} `json:"status"`
}

// read reads the task's status, after checking that the task is still the one this sink writes
// for (pinning its UID on the first read when none was given). A task with another UID is an
// error matching ErrTaskReplaced; refused is the API server's refusal that led to this read, if
// any, and is wrapped too.
func (d *directSink) read(ctx context.Context, refused error) (*taskRead, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	res := d.rc.Get().Namespace(d.namespace).Resource("workflowtasks").Name(d.task).SubResource("status").
		MaxRetries(0).Do(ctx)
	if err := res.Error(); err != nil { // (Raw's error would not carry the API server's message)
		return nil, fmt.Errorf("progress: reading task %s/%s: %w", d.namespace, d.task, err)
	}
	raw, _ := res.Raw()
	var got taskRead
	if err := json.Unmarshal(raw, &got); err != nil {
		return nil, fmt.Errorf("progress: reading task %s/%s: %w", d.namespace, d.task, err)
	}
	if got.Metadata.UID == "" {
		return nil, fmt.Errorf("progress: reading task %s/%s: no metadata.uid in the answer", d.namespace, d.task)
	}
	switch {
	case d.uid == "":
		d.uid = got.Metadata.UID
	case got.Metadata.UID != d.uid:
		err := fmt.Errorf("progress: task %s/%s: %w (it has UID %s now; this reporter writes for UID %s): nothing more is written",
			d.namespace, d.task, ErrTaskReplaced, got.Metadata.UID, d.uid)
		if refused != nil {
			err = fmt.Errorf("%w: %w", err, refused)
		}
		return nil, err
	}
	return &got, nil
}

// put sends the entries once: it reads the task (its UID must be the writer's), then applies
// on the condition that the task's resourceVersion is still the one read, so the check and the
// write are atomic. A conflict (the task changed in between: another writer, the controller,
// or the task replaced) reads again, at most maxConflicts times. What lands is in the status:
// nothing to send again.
func (d *directSink) put(ctx context.Context, entries []workflowv1alpha1.ProgressEntry, _ bool) (time.Duration, error) {
	var refused error
	for range maxConflicts {
		task, err := d.read(ctx, refused)
		if err != nil {
			d.stats.count(err)
			return 0, err
		}
		body, err := ApplyBody(d.namespace, d.task, d.uid, task.Metadata.ResourceVersion, entries)
		if err != nil {
			return 0, err
		}
		d.stats.bytes.Add(int64(len(body)))
		err = d.apply(ctx, d.fm, body)
		d.stats.count(err)
		if err == nil || !apierrors.IsConflict(err) {
			return 0, err
		}
		refused = err
	}
	return 0, refused
}

// apply sends one server-side apply. force takes over entries another writer held last (the
// same type written from two places): the latest writer wins, as with any status field.
func (d *directSink) apply(ctx context.Context, fm string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	err := d.rc.Patch(types.ApplyPatchType).
		Namespace(d.namespace).Resource("workflowtasks").Name(d.task).SubResource("status").
		Param("fieldManager", fm).Param("force", "true").
		MaxRetries(0).Body(body).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("progress: writing task %s/%s as %q: %w", d.namespace, d.task, fm, err)
	}
	return nil
}

// change applies a one-entry change: it reads the task (its UID must be the writer's),
// computes the entry from what the task has, and applies it under the field manager fm on the
// condition that the task did not change meanwhile; a delete is a JSON patch that tests the UID
// and the entry's place first. A conflict (someone else wrote, or the task was replaced) reads
// again, until ctx ends.
func (d *directSink) change(ctx context.Context, c ingest.Change, fm string) error {
	var refused error
	for {
		task, err := d.read(ctx, refused)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(task.Status.Progress, func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == c.Type })
		if c.Delete && i < 0 {
			return nil
		}
		if c.Delete {
			err = d.remove(ctx, fm, c.Type, i)
		} else {
			var have workflowv1alpha1.ProgressEntry
			if i >= 0 {
				have = task.Status.Progress[i]
			}
			body, berr := ApplyBody(d.namespace, d.task, d.uid, task.Metadata.ResourceVersion,
				[]workflowv1alpha1.ProgressEntry{c.Entry(have, i >= 0, time.Now())})
			if berr != nil {
				return berr
			}
			err = d.apply(ctx, fm, body)
		}
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || c.Delete && apierrors.IsInvalid(err)) && ctx.Err() == nil:
			refused = err // the task changed under us (or a failed test op): look again
		default:
			return err
		}
	}
}

// remove deletes entry i, of type typ, whoever wrote it: a JSON patch that first tests that the
// task is still this writer's (its metadata.uid) and that the entry at that index is still the
// one, so a concurrent change makes it fail and read again, never remove the wrong entry.
func (d *directSink) remove(ctx context.Context, fm, typ string, i int) error {
	patch, _ := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": d.uid},
		{"op": "test", "path": fmt.Sprintf("/status/progress/%d/type", i), "value": typ},
		{"op": "remove", "path": fmt.Sprintf("/status/progress/%d", i)},
	})
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	err := d.rc.Patch(types.JSONPatchType).Namespace(d.namespace).Resource("workflowtasks").Name(d.task).SubResource("status").
		Param("fieldManager", fm).MaxRetries(0).Body(patch).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("progress: deleting %s from task %s/%s: %w", typ, d.namespace, d.task, err)
	}
	return nil
}
