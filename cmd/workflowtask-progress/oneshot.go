package main

import (
	"context"
	"encoding/json"
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
	raw, err := rc.Get().Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").Do(ctx).Raw()
	if err != nil {
		return nil, fmt.Errorf("reading task %s/%s: %w", o.namespace, o.task, explain(err))
	}
	task := &workflowv1alpha1.WorkflowTask{}
	if err := json.Unmarshal(raw, task); err != nil {
		return nil, fmt.Errorf("decoding task %s/%s: %w", o.namespace, o.task, err)
	}
	return task, nil
}

func findEntry(task *workflowv1alpha1.WorkflowTask, typ string) (workflowv1alpha1.ProgressEntry, int, bool) {
	for i, e := range task.Status.Progress {
		if e.Type == typ {
			return e, i, true
		}
	}
	return workflowv1alpha1.ProgressEntry{}, -1, false
}

// applyEntry server-side applies one entry (or, with e nil, none: dropping this manager's).
// A non-empty resourceVersion makes it conditional on the task not having changed.
func applyEntry(ctx context.Context, rc *rest.RESTClient, o options, fm string, e *workflowv1alpha1.ProgressEntry, resourceVersion string) error {
	list := []workflowv1alpha1.ProgressEntry{}
	if e != nil {
		list = append(list, *e)
	}
	meta := map[string]string{"name": o.task, "namespace": o.namespace}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": workflowv1alpha1.GroupVersion.String(), "kind": "WorkflowTask",
		"metadata": meta, "status": map[string]any{"progress": list},
	})
	if err != nil {
		return err
	}
	return rc.Patch(types.ApplyPatchType).Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").
		Param("fieldManager", fm).Param("force", "true").Body(body).Do(ctx).Error()
}

// writeOne sets or deletes one entry.
func writeOne(ctx context.Context, cfg *rest.Config, o options, u progress.Update) error {
	rc, err := progress.NewRESTClient(cfg)
	if err != nil {
		return err
	}
	if u.Delete {
		return deleteOne(ctx, rc, o, u.Type)
	}
	e := workflowv1alpha1.ProgressEntry{Type: u.Type, Current: u.Current, Total: u.Total, Identifier: u.Identifier,
		UpdateTime: ptr.To(metav1.NewMicroTime(time.Now()))}
	if !u.HasTotal || !u.HasIdentifier { // keep what the entry has
		task, err := getTask(ctx, rc, o)
		if err != nil {
			return err
		}
		if have, _, ok := findEntry(task, u.Type); ok {
			if !u.HasTotal {
				e.Total = have.Total
			}
			if !u.HasIdentifier {
				e.Identifier = have.Identifier
			}
		}
	}
	if err := applyEntry(ctx, rc, o, fieldManagerFor(o, u.Type), &e, ""); err != nil {
		return fmt.Errorf("writing %s to task %s/%s: %w", u.Type, o.namespace, o.task, explain(err))
	}
	return nil
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
	for {
		task, err := getTask(ctx, rc, o)
		if err != nil {
			return err
		}
		e, _, _ := findEntry(task, typ)
		e.Type, e.Current, e.UpdateTime = typ, max(e.Current+d, 0), ptr.To(metav1.NewMicroTime(time.Now()))
		err = applyEntry(ctx, rc, o, fieldManagerFor(o, typ), &e, task.ResourceVersion)
		switch {
		case err == nil:
			return nil
		case apierrors.IsConflict(err) && ctx.Err() == nil:
			continue
		default:
			return fmt.Errorf("adding to %s of task %s/%s: %w", typ, o.namespace, o.task, explain(err))
		}
	}
}

// deleteOne removes an entry whoever wrote it: a JSON patch that first tests the entry at
// that index is still the one (so a concurrent change makes it fail and retry, never remove
// the wrong entry). A writer that still reports the type will write it again.
func deleteOne(ctx context.Context, rc *rest.RESTClient, o options, typ string) error {
	for {
		task, err := getTask(ctx, rc, o)
		if err != nil {
			return err
		}
		_, i, ok := findEntry(task, typ)
		if !ok {
			return nil
		}
		patch, _ := json.Marshal([]map[string]any{
			{"op": "test", "path": fmt.Sprintf("/status/progress/%d/type", i), "value": typ},
			{"op": "remove", "path": fmt.Sprintf("/status/progress/%d", i)},
		})
		err = rc.Patch(types.JSONPatchType).Namespace(o.namespace).Resource("workflowtasks").Name(o.task).SubResource("status").
			Param("fieldManager", fieldManagerFor(o, typ)).Body(patch).Do(ctx).Error()
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsInvalid(err)) && ctx.Err() == nil:
			continue // the list changed under us (a failed test op): look again
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
