package notify

import (
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Data is a CloudEvent's data (application/json): the task as the announcement saw it. Only
// what the task's status and identity say: never its template, managed fields or anything from
// its pods' environment.
type Data struct {
	// ID is the task's short ID (GET /workflow/progress/{id}); UID its metadata.uid.
	ID  string `json:"id,omitempty"`
	UID string `json:"uid"`
	// Namespace and Name name the task.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type and Owner are the task's spec.type and spec.owner.
	Type  string `json:"type"`
	Owner string `json:"owner"`
	// Phase, Reason and Message are the announcement's (see Announcement).
	Phase   string `json:"phase,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Entry and Milestone: for a progress announcement, the entry and the percentage crossed.
	Entry     string `json:"entry,omitempty"`
	Milestone int32  `json:"milestone,omitempty"`
	// Progress is the task's progress when the event was sent.
	Progress []ProgressEntry `json:"progress,omitempty"`
	// CreationTime, StartTime and CompletionTime are the task's.
	CreationTime   *time.Time `json:"creationTime,omitempty"`
	StartTime      *time.Time `json:"startTime,omitempty"`
	CompletionTime *time.Time `json:"completionTime,omitempty"`
}

// ProgressEntry is one progress entry in Data.
type ProgressEntry struct {
	Type       string `json:"type"`
	Current    int64  `json:"current"`
	Total      int64  `json:"total"`
	Identifier string `json:"identifier,omitempty"`
}

// Source is a task's CloudEvent source: its API path.
func Source(namespace, name string) string {
	return fmt.Sprintf("/apis/%s/namespaces/%s/workflowtasks/%s", workflowv1alpha1.GroupVersion, namespace, name)
}

// NewEvent is the CloudEvent of announcement a about task; the task's start and completion
// are taken from times (its record's) when its status does not show them yet.
func NewEvent(task *workflowv1alpha1.WorkflowTask, times Outbox, a Announcement) (cloudevents.Event, error) {
	ev := cloudevents.New(cloudevents.CloudEventsVersionV1)
	ev.SetID(a.ID(task.UID))
	ev.SetType(a.Type())
	ev.SetSource(Source(task.Namespace, task.Name))
	ev.SetSubject(task.Namespace + "/" + task.Name)
	ev.SetTime(a.Time.Time)
	if err := ev.SetData(cloudevents.ApplicationJSON, newData(task, times, a)); err != nil {
		return ev, fmt.Errorf("encoding the data of %s: %w", ev.ID(), err)
	}
	return ev, nil
}

func newData(task *workflowv1alpha1.WorkflowTask, times Outbox, a Announcement) Data {
	d := Data{
		ID: workflowv1alpha1.TaskIDFromUID(task.UID), UID: string(task.UID), Namespace: task.Namespace, Name: task.Name,
		Type: string(task.Spec.Type), Owner: task.Spec.Owner,
		Phase: a.Phase, Reason: a.Reason, Message: a.Message, Entry: a.Entry, Milestone: a.Milestone,
		CreationTime: timeOf(&task.CreationTimestamp), StartTime: timeOf(or(times.StartTime, task.Status.StartTime)),
		CompletionTime: timeOf(or(times.CompletionTime, task.Status.CompletionTime)),
	}
	for _, p := range task.Status.Progress {
		d.Progress = append(d.Progress, ProgressEntry{Type: p.Type, Current: p.Current, Total: p.Total, Identifier: p.Identifier})
	}
	return d
}

func timeOf(t *metav1.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func or(a, b *metav1.Time) *metav1.Time {
	if a != nil {
		return a
	}
	return b
}
