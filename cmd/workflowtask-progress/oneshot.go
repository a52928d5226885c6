package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// replacedMessage says that the task o names is not the one this pod belongs to.
func replacedMessage(o options, detail string) string {
	return fmt.Sprintf("task %s/%s was deleted and re-created: this pod belonged to the old one; nothing written (%s)", o.namespace, o.task, detail)
}

// client is the one-entry commands' progress client for o, writing where target says.
func (o options) client(target progress.Options) (*progress.Client, error) {
	target.Namespace, target.Task, target.UID, target.FieldManager = o.namespace, o.task, o.uid, o.fieldManager
	return progress.NewClient(target)
}

// writeOne sets or deletes one entry. A value left out (total, identifier) keeps what the
// entry has.
func writeOne(ctx context.Context, target progress.Options, o options, u progress.Update) error {
	c, err := o.client(target)
	if err != nil {
		return err
	}
	what := "writing"
	if u.Delete {
		what = "deleting"
	}
	return explain(o, what, u.Type, c.Apply(ctx, u))
}

// addOne adds delta to an entry.
func addOne(ctx context.Context, target progress.Options, o options, typ, delta string) error {
	d, err := strconv.ParseInt(delta, 10, 64)
	if err != nil {
		return fmt.Errorf("DELTA %q is not a whole number", delta)
	}
	c, err := o.client(target)
	if err != nil {
		return err
	}
	return explain(o, "adding to", typ, c.Add(ctx, typ, d))
}

// explain adds what a refusal means for a task's runner to the error of a change.
func explain(o options, what, typ string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, progress.ErrTaskReplaced):
		return errors.New(replacedMessage(o, err.Error()))
	case apierrors.IsForbidden(err):
		err = fmt.Errorf("forbidden (a task's runner may read and write only its own task's progress): %w", err)
	case apierrors.IsUnauthorized(err):
		err = fmt.Errorf("not authenticated (is the token valid, and for this cluster?): %w", err)
	}
	return fmt.Errorf("%s %s of task %s/%s: %w", what, typ, o.namespace, o.task, err)
}
