package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// action is a change of a task's spec a person asks for by name: cancel, suspend, resume.
type action struct {
	verb, short, done string
	// patch is the JSON merge patch of the task's spec.
	patch string
	// refuse says why the action does not apply to the task as it is ("" if it does);
	// already says that the task is already where the action would bring it.
	refuse  func(t *workflowv1alpha1.WorkflowTask) string
	already func(t *workflowv1alpha1.WorkflowTask) bool
}

func isTrue(b *bool) bool { return b != nil && *b }

// conflictBackoff spaces the retries of an action that met a change of the task (8 tries over
// about 2.5 s): a running task's status changes every second or so.
var conflictBackoff = wait.Backoff{Steps: 8, Duration: 10 * time.Millisecond, Factor: 2, Jitter: 0.5}

var (
	cancelAction = action{
		verb: "cancel", short: "Cancel a task: its Job is deleted, its record kept (cannot be undone)", done: "canceled",
		patch: `{"spec":{"cancel":true}}`,
		refuse: func(t *workflowv1alpha1.WorkflowTask) string {
			if p := t.Status.Phase; p == workflowv1alpha1.TaskPhaseCompleted || p == workflowv1alpha1.TaskPhaseError {
				return "it already finished (" + string(p) + ")"
			}
			return ""
		},
		already: func(t *workflowv1alpha1.WorkflowTask) bool { return isTrue(t.Spec.Cancel) },
	}
	suspendAction = action{
		verb: "suspend", short: "Suspend a task: its Job is suspended (running pods are stopped) until resumed", done: "suspended",
		patch:   `{"spec":{"suspend":true}}`,
		refuse:  refuseFinished,
		already: func(t *workflowv1alpha1.WorkflowTask) bool { return isTrue(t.Spec.Suspend) },
	}
	resumeAction = action{
		verb: "resume", short: "Resume a suspended task", done: "resumed",
		patch:   `{"spec":{"suspend":false}}`,
		refuse:  refuseFinished,
		already: func(t *workflowv1alpha1.WorkflowTask) bool { return !isTrue(t.Spec.Suspend) },
	}
)

func refuseFinished(t *workflowv1alpha1.WorkflowTask) string {
	switch {
	case isTrue(t.Spec.Cancel):
		return "it was canceled"
	case t.Status.Phase.IsFinished():
		return "it already finished (" + string(t.Status.Phase) + ")"
	}
	return ""
}

func newActionCommand(o *options, a action) *cobra.Command {
	return &cobra.Command{
		Use:     a.verb + " NAME",
		Short:   a.short,
		Example: "  kubectl workflowtask " + a.verb + " upload-7f3a",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.clientFor(args[0])
			if err != nil {
				return err
			}
			// A running task changes all the time (its progress, the controller's status): on a
			// conflict, read it again and decide again.
			var changed bool
			err = retry.RetryOnConflict(conflictBackoff, func() error {
				t := &workflowv1alpha1.WorkflowTask{}
				if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: args[0]}, t); err != nil {
					return fmt.Errorf("getting workflowtask %s/%s: %w", ns, args[0], err)
				}
				changed, err = a.do(cmd.Context(), c, t)
				return err
			})
			if err != nil {
				return err
			}
			name := "workflowtask.workflow.taskops.dev/" + args[0]
			if !changed {
				fmt.Fprintf(o.streams.Out, "%s already %s\n", name, a.done)
				return nil
			}
			fmt.Fprintf(o.streams.Out, "%s %s\n", name, a.done)
			return nil
		},
	}
}

// do applies the action to the task as it was read: refused with the reason when it does not
// apply, nothing when the task is already there (false), else a merge patch of the spec that
// holds only for that very object (its UID and resourceVersion): a task changed in between is
// refused by the API server with a conflict, one replaced under the name for its uid (422), and
// neither is patched blind.
func (a action) do(ctx context.Context, c client.Client, t *workflowv1alpha1.WorkflowTask) (bool, error) {
	if why := a.refuse(t); why != "" {
		return false, fmt.Errorf("cannot %s workflowtask %s/%s: %s", a.verb, t.Namespace, t.Name, why)
	}
	if a.already(t) {
		return false, nil
	}
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"uid":%q,"resourceVersion":%q},%s`,
		t.UID, t.ResourceVersion, a.patch[1:])))
	if err := c.Patch(ctx, t.DeepCopy(), patch); err != nil {
		return false, fmt.Errorf("cannot %s workflowtask %s/%s: %w", a.verb, t.Namespace, t.Name, err)
	}
	return true, nil
}
