package apiserver

import (
	"context"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// canSee: the task's owner sees it; anyone else only if a SubjectAccessReview allows "get" on
// workflowtasks/progress for that task (an admin). Only an explicit allow allows.
func (h *handler) canSee(ctx context.Context, u user.Info, task *workflowv1alpha1.WorkflowTask) (bool, error) {
	if task.Spec.Owner == u.GetName() {
		return true, nil
	}
	return h.isAdmin(ctx, u, task.Namespace, task.Name)
}

// isAdmin asks whether u may "get" workflowtasks/progress of the task namespace/name, whether
// or not there is such a task.
func (h *handler) isAdmin(ctx context.Context, u user.Info, namespace, name string) (bool, error) {
	attrs := authorizer.AttributesRecord{
		User: u, Verb: "get", ResourceRequest: true,
		APIGroup: workflowv1alpha1.GroupVersion.Group, APIVersion: workflowv1alpha1.GroupVersion.Version,
		Resource: "workflowtasks", Subresource: "progress", Namespace: namespace, Name: name,
	}
	decision, _, err := h.authz.Authorize(ctx, attrs)
	if decision == authorizer.DecisionAllow {
		return true, nil
	}
	return false, err
}
