package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// A one-entry command owns just that entry, under a field manager named after its type, so
// separate commands for separate types never take away each other's entries.
func fieldManagerFor(o options, typ string) string {
	if o.fieldManager != "" {
		return o.fieldManager
	}
	return progress.DefaultFieldManager(typ)
}

func getTask(ctx context.Context, rc *rest.RESTClient, o options) (*workflowv1alpha1.WorkflowTask, error) {
	res := rc.Get().Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").Do(ctx)
	if err := res.Error(); err != nil { // (Raw's error would not carry the API server's message)
		return nil, fmt.Errorf("reading task %s/%s: %w", o.namespace, o.task, explain(err))
	}
	raw, _ := res.Raw()
	task := &workflowv1alpha1.WorkflowTask{}
	if err := json.Unmarshal(raw, task); err != nil {
		return nil, fmt.Errorf("decoding task %s/%s: %w", o.namespace, o.task, err)
	}
	return task, nil
}

// replacedMessage says that the task o names is not the one this pod belongs to.
func replacedMessage(o options, detail string) string {
	return fmt.Sprintf("task %s/%s was deleted and re-created: this pod belonged to the old one; nothing written (%s)", o.namespace, o.task, detail)
}

// checkUID makes sure the task read is the one this command writes for: the one with o.uid,
// or, when o.uid is empty, the one read first (its UID is pinned in o). refused is the API
// server's refusal that led to reading the task again, if any.
func checkUID(o *options, task *workflowv1alpha1.WorkflowTask, refused error) error {
	switch {
	case o.uid == "":
		o.uid = task.UID
	case task.UID != o.uid:
		detail := fmt.Sprintf("the task's UID is %s, this pod's task had UID %s", task.UID, o.uid)
		if refused != nil {
			detail += "; the API server refused the write: " + refused.Error()
		}
		return errors.New(replacedMessage(*o, detail))
	}
	return nil
}

func findEntry(task *workflowv1alpha1.WorkflowTask, typ string) (workflowv1alpha1.ProgressEntry, int, bool) {
	for i, e := range task.Status.Progress {
		if e.Type == typ {
			return e, i, true
		}
	}
	return workflowv1alpha1.ProgressEntry{}, -1, false
}

// applyEntry server-side applies one entry on the condition that the task is still the one
// read: resourceVersion is the task's as read (whose UID checkUID accepted), so the check and
// the write are atomic. (metadata.uid is sent too, naming the object meant; the API server
// ignores it in a patch of the status subresource, the resourceVersion is what it checks.)
func applyEntry(ctx context.Context, rc *rest.RESTClient, o options, fm string, e workflowv1alpha1.ProgressEntry, resourceVersion string) error {
	body, err := progress.ApplyBody(o.namespace, o.task, o.uid, resourceVersion, []workflowv1alpha1.ProgressEntry{e})
	if err != nil {
		return err
	}
	return rc.Patch(types.ApplyPatchType).Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").
		Param("fieldManager", fm).Param("force", "true").Body(body).Do(ctx).Error()
}

// updateEntry reads the task, checks it is this pod's (checkUID), computes the entry from what
// the task has, and applies it on the condition that the task did not change meanwhile; on a
// conflict (someone else wrote, or the task was replaced), it reads again.
func updateEntry(ctx context.Context, rc *rest.RESTClient, o options, typ, what string,
	compute func(have workflowv1alpha1.ProgressEntry, found bool) workflowv1alpha1.ProgressEntry) error {
	var refused error
	for {
		task, err := getTask(ctx, rc, o)
		if err != nil {
			return err
		}
		if err := checkUID(&o, task, refused); err != nil {
			return err
		}
		have, _, found := findEntry(task, typ)
		err = applyEntry(ctx, rc, o, fieldManagerFor(o, typ), compute(have, found), task.ResourceVersion)
		switch {
		case err == nil:
			return nil
		case apierrors.IsConflict(err) && ctx.Err() == nil:
			refused = err
			continue
		default:
			return fmt.Errorf("%s %s of task %s/%s: %w", what, typ, o.namespace, o.task, explain(err))
		}
	}
}

// writeOne sets or deletes one entry. A value left out (total, identifier) keeps what the
// entry has.
func writeOne(ctx context.Context, cfg *rest.Config, o options, u progress.Update) error {
	rc, err := progress.NewRESTClient(cfg)
	if err != nil {
		return err
	}
	if u.Delete {
		return deleteOne(ctx, rc, o, u.Type)
	}
	now := ptr.To(metav1.NewMicroTime(time.Now()))
	return updateEntry(ctx, rc, o, u.Type, "writing", func(have workflowv1alpha1.ProgressEntry, found bool) workflowv1alpha1.ProgressEntry {
		e := workflowv1alpha1.ProgressEntry{Type: u.Type, Current: u.Current, Total: u.Total, Identifier: u.Identifier, UpdateTime: now}
		if found && !u.HasTotal {
			e.Total = have.Total
		}
		if found && !u.HasIdentifier {
			e.Identifier = have.Identifier
		}
		return e
	})
}

// addOne adds delta to an entry: read, add, and apply on the condition that the task did not
// change meanwhile; on a conflict (someone else wrote), read again.
func addOne(ctx context.Context, cfg *rest.Config, o options, typ, delta string) error {
	d, err := strconv.ParseInt(delta, 10, 64)
	if err != nil {
		return fmt.Errorf("DELTA %q is not a whole number", delta)
	}
	if !progress.ValidType(typ) {
		return fmt.Errorf("invalid type %q", typ)
	}
	rc, err := progress.NewRESTClient(cfg)
	if err != nil {
		return err
	}
	return updateEntry(ctx, rc, o, typ, "adding to", func(e workflowv1alpha1.ProgressEntry, _ bool) workflowv1alpha1.ProgressEntry {
		e.Type, e.Current, e.UpdateTime = typ, max(e.Current+d, 0), ptr.To(metav1.NewMicroTime(time.Now()))
		return e
	})
}

// deleteOne removes an entry whoever wrote it: a JSON patch that first tests that the task is
// still this pod's (its metadata.uid) and that the entry at that index is still the one (so a
// concurrent change makes it fail and read again, never remove the wrong entry). A writer that
// still reports the type will write it again.
func deleteOne(ctx context.Context, rc *rest.RESTClient, o options, typ string) error {
	var refused error
	for {
		task, err := getTask(ctx, rc, o)
		if err != nil {
			return err
		}
		if err := checkUID(&o, task, refused); err != nil {
			return err
		}
		_, i, ok := findEntry(task, typ)
		if !ok {
			return nil
		}
		patch, _ := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/uid", "value": o.uid},
			{"op": "test", "path": fmt.Sprintf("/status/progress/%d/type", i), "value": typ},
			{"op": "remove", "path": fmt.Sprintf("/status/progress/%d", i)},
		})
		err = rc.Patch(types.JSONPatchType).Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").
			Param("fieldManager", fieldManagerFor(o, typ)).Body(patch).Do(ctx).Error()
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsInvalid(err)) && ctx.Err() == nil:
			refused = err
			continue // the task changed under us (a failed test op): look again
		default:
			return fmt.Errorf("deleting %s from task %s/%s: %w", typ, o.namespace, o.task, explain(err))
		}
	}
}

// explain adds what a refusal means for a task's runner to the API server's error.
func explain(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("forbidden (a task's runner may read and write only its own task's status): %w", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("not authenticated (is the token valid, and for this cluster?): %w", err)
	}
	return err
}
