package apiserver

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// IndexTaskID indexes tasks by the ID derived from their UID (not by status.id, which anyone
// who can write the status could change).
const IndexTaskID = "workflow.taskops.dev/task-id"

// SetupIndex registers IndexTaskID on the manager's cache.
func SetupIndex(ctx context.Context, indexer client.FieldIndexer) error {
	err := indexer.IndexField(ctx, &workflowv1alpha1.WorkflowTask{}, IndexTaskID, func(o client.Object) []string {
		return []string{workflowv1alpha1.TaskIDFromUID(o.GetUID())}
	})
	if err != nil {
		return fmt.Errorf("indexing tasks by ID: %w", err)
	}
	return nil
}

// cacheTasks reads tasks from the informer cache: no API server call per request.
type cacheTasks struct{ reader client.Reader }

func (c cacheTasks) ByID(ctx context.Context, id string) ([]*workflowv1alpha1.WorkflowTask, error) {
	var list workflowv1alpha1.WorkflowTaskList
	if err := c.reader.List(ctx, &list, client.MatchingFields{IndexTaskID: id}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing tasks with ID %s: %w", id, err)
	}
	out := make([]*workflowv1alpha1.WorkflowTask, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

func (c cacheTasks) ByName(ctx context.Context, namespace, name string) (*workflowv1alpha1.WorkflowTask, error) {
	task := &workflowv1alpha1.WorkflowTask{}
	err := c.reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, task)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil // no such task: nil, as the other lookups answer
	case err != nil:
		return nil, fmt.Errorf("getting task %s/%s: %w", namespace, name, err)
	}
	return task, nil
}
