package plugin

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// describeMaxEvents is how many of the most recent events describe shows.
const describeMaxEvents = 10

// describeMaxPods bounds the pods describe lists (and reads the events of).
const describeMaxPods = 5

// described is everything describe shows about a task; what could not be read says why.
type described struct {
	task      *workflowv1alpha1.WorkflowTask
	job       *batchv1.Job
	jobErr    string
	pods      []corev1.Pod
	podsErr   string
	events    []corev1.Event
	eventsErr string
}

func newDescribeCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "describe NAME",
		Short:   "Show a task in detail: phase, conditions, times, Job, pods, progress and recent events",
		Example: `  kubectl workflowtask describe upload-7f3a`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.clientFor(args[0])
			if err != nil {
				return err
			}
			d, err := gather(cmd.Context(), c, ns, args[0])
			if err != nil {
				return err
			}
			return printDescribe(o.streams.Out, d, o.now())
		},
	}
}

// gather reads the task, then what belongs to it; only the task is required (a user may read
// tasks but not Jobs, pods or events).
func gather(ctx context.Context, c client.Client, ns, name string) (*described, error) {
	d := &described{task: &workflowv1alpha1.WorkflowTask{}}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d.task); err != nil {
		return nil, fmt.Errorf("getting workflowtask %s/%s: %w", ns, name, err)
	}
	job := &batchv1.Job{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, job); {
	case apierrors.IsNotFound(err):
	case err != nil:
		d.jobErr = reason(err)
	case isOwnedBy(job.OwnerReferences, d.task):
		d.job = job
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{workflowv1alpha1.LabelTaskName: name}); err != nil {
		d.podsErr = reason(err)
	} else {
		d.pods = pods.Items
		sort.Slice(d.pods, func(i, j int) bool { return d.pods[i].CreationTimestamp.Before(&d.pods[j].CreationTimestamp) })
		if len(d.pods) > describeMaxPods {
			d.pods = d.pods[len(d.pods)-describeMaxPods:]
		}
	}
	// Events by name (the task and its Job share it), kept only for these very objects: a
	// task deleted and created again under the name has events of its own.
	names, uids := []string{name}, map[types.UID]bool{d.task.UID: true}
	if d.job != nil {
		uids[d.job.UID] = true
	}
	for _, p := range d.pods {
		names, uids[p.UID] = append(names, p.Name), true
	}
	for _, n := range names {
		events := &corev1.EventList{}
		if err := c.List(ctx, events, client.InNamespace(ns), client.MatchingFields{"involvedObject.name": n}); err != nil {
			d.eventsErr = reason(err)
			break
		}
		for _, e := range events.Items {
			if uids[e.InvolvedObject.UID] {
				d.events = append(d.events, e)
			}
		}
	}
	return d, nil
}

func isOwnedBy(refs []metav1.OwnerReference, t *workflowv1alpha1.WorkflowTask) bool {
	for _, r := range refs {
		if r.UID == t.UID {
			return true
		}
	}
	return false
}

// reason is why something could not be read, short: "forbidden", or the error.
func reason(err error) string {
	if apierrors.IsForbidden(err) {
		return "<not allowed to read>"
	}
	return "<" + oneLine(err.Error()) + ">"
}

// printDescribe prints d as kubectl describe does: aligned fields, then tables.
func printDescribe(w io.Writer, d *described, now time.Time) error {
	t := d.task
	tw := printers.GetNewTabWriter(w)
	// section starts a block with its own column widths (a table does not stretch the fields
	// above it).
	section := func(title string) {
		_ = tw.Flush()
		tw = printers.GetNewTabWriter(w)
		fmt.Fprintln(tw, title)
	}
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Name", t.Name)
	field("Namespace", t.Namespace)
	field("ID", orNone(t.Status.ID))
	field("Type", string(t.Spec.Type))
	field("Owner", oneLine(t.Spec.Owner))
	field("Labels", orNone(oneLine(joinMap(t.Labels))))
	field("Phase", orNone(string(t.Status.Phase)))
	field("Progress", orNone(workflowv1alpha1.ProgressSummary(t.Status.Progress)))
	field("Created", when(t.CreationTimestamp.Time, now))
	if t.Status.StartTime != nil {
		field("Started", when(t.Status.StartTime.Time, now))
	}
	if t.Status.CompletionTime != nil {
		field("Finished", when(t.Status.CompletionTime.Time, now))
	}
	var flags []string
	if t.Spec.Suspend != nil && *t.Spec.Suspend {
		flags = append(flags, "suspend")
	}
	if t.Spec.Cancel != nil && *t.Spec.Cancel {
		flags = append(flags, "cancel")
	}
	if t.Spec.ProgressDeadlineSeconds != nil {
		flags = append(flags, fmt.Sprintf("progressDeadlineSeconds=%d", *t.Spec.ProgressDeadlineSeconds))
	}
	field("Spec", orNone(strings.Join(flags, ", ")))
	switch {
	case d.job != nil:
		s := d.job.Status
		field("Job", fmt.Sprintf("%s (active %d, succeeded %d, failed %d)", d.job.Name, s.Active, s.Succeeded, s.Failed))
	case d.jobErr != "":
		field("Job", d.jobErr)
	default:
		field("Job", "<none>")
	}

	section("Conditions:")
	if len(t.Status.Conditions) == 0 {
		fmt.Fprintln(tw, "  <none>")
	} else {
		fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
		for _, c := range t.Status.Conditions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, ago(c.LastTransitionTime.Time, now), oneLine(c.Message))
		}
	}

	section("Progress entries:")
	if len(t.Status.Progress) == 0 {
		fmt.Fprintln(tw, "  <none>")
	} else {
		entries := append([]workflowv1alpha1.ProgressEntry(nil), t.Status.Progress...)
		sort.Slice(entries, func(i, j int) bool { return naturalLess(entries[i].Type, entries[j].Type) })
		fmt.Fprintln(tw, "  TYPE\tAMOUNT\tDONE\tUPDATED\tIDENTIFIER")
		for _, e := range entries {
			done, updated := "-", "-"
			if e.Total > 0 {
				done = fmt.Sprintf("%d%%", share(e.Current, e.Total))
			}
			if e.UpdateTime != nil {
				updated = ago(e.UpdateTime.Time, now) + " ago"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", oneLine(e.Type), amount(e), done, updated, orDash(oneLine(e.Identifier)))
		}
	}

	section("Pods:")
	switch {
	case d.podsErr != "":
		fmt.Fprintln(tw, "  "+d.podsErr)
	case len(d.pods) == 0:
		fmt.Fprintln(tw, "  <none>")
	default:
		fmt.Fprintln(tw, "  NAME\tPHASE\tNODE\tRESTARTS\tAGE")
		for _, p := range d.pods {
			restarts := int32(0)
			for _, cs := range p.Status.ContainerStatuses {
				restarts += cs.RestartCount
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", p.Name, p.Status.Phase, orNone(p.Spec.NodeName), restarts, age(p.CreationTimestamp, now))
		}
	}

	section("Events:")
	events := recent(d.events)
	switch {
	case d.eventsErr != "":
		fmt.Fprintln(tw, "  "+d.eventsErr)
	case len(events) == 0:
		fmt.Fprintln(tw, "  <none>")
	default:
		fmt.Fprintln(tw, "  LAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE")
		// Anyone who may create Events in the namespace writes every field of one.
		for _, e := range events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s/%s\t%s\n", ago(eventTime(e), now), oneLine(e.Type), oneLine(e.Reason),
				oneLine(strings.ToLower(e.InvolvedObject.Kind)), oneLine(e.InvolvedObject.Name), oneLine(e.Message))
		}
	}
	return tw.Flush()
}

// recent is the last describeMaxEvents events, oldest first.
func recent(events []corev1.Event) []corev1.Event {
	events = append([]corev1.Event(nil), events...)
	sort.SliceStable(events, func(i, j int) bool { return eventTime(events[i]).Before(eventTime(events[j])) })
	if len(events) > describeMaxEvents {
		events = events[len(events)-describeMaxEvents:]
	}
	return events
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// when is a time as describe shows it: RFC 3339 and how long ago.
func when(t, now time.Time) string {
	return t.UTC().Format(time.RFC3339) + " (" + ago(t, now) + " ago)"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func joinMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
