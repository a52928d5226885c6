// Package notify tells the world what happens to WorkflowTasks: each announcement the controller
// makes (a phase change, a progress milestone, a stall) is delivered as a CloudEvent 1.0 to the
// sinks the platform team configured, at least once, in order per task, with an id that stays the
// same however often it is sent.
//
// The controller keeps a task's announcements in its record (the operator-only annotation
// workflow.taskops.dev/record), written with the transition they announce; the Notifier delivers
// what the record holds beyond what every sink has taken (Outbox.Sent). Delivered positions live
// in memory and reach the record with the controller's next write of it, and once more when a
// finished task's last announcement is delivered, so a restart re-sends at most what was
// delivered since (same ids).
package notify

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What an announcement says: the last word of its CloudEvent type,
// dev.taskops.workflowtask.<what>.v1.
const (
	// Queued: the operator created the task's Job; no pod runs yet.
	Queued = "queued"
	// Started: a pod of the task's Job runs, for the first time.
	Started = "started"
	// Suspended: the task or its Job was suspended.
	Suspended = "suspended"
	// Resumed: a suspended task runs (or queues) again.
	Resumed = "resumed"
	// Stalled: no progress entry changed within progressDeadlineSeconds.
	Stalled = "stalled"
	// Unstalled: progress moves again after a stall.
	Unstalled = "unstalled"
	// Progress: a progress entry with a total crossed 25, 50, 75 or 100 %.
	Progress = "progress"
	// Succeeded, Failed, Canceled: the task finished (phase Completed, Error, Canceled).
	Succeeded = "succeeded"
	Failed    = "failed"
	Canceled  = "canceled"
	// Deleted: the task object is gone. Said by the Notifier when it sees the deletion, from
	// memory: a task deleted while no operator runs is not announced.
	Deleted = "deleted"
)

// TypePrefix starts every CloudEvent type this operator sends.
const TypePrefix = "dev.taskops.workflowtask."

// Announcement is one thing said about a task, as the controller's record keeps it until it is
// delivered: what was said, in which order (Seq), when, and the facts of the moment.
type Announcement struct {
	// Seq numbers a task's announcements from 1, in the order they were made.
	Seq int64 `json:"seq"`
	// What is one of the constants above.
	What string `json:"what"`
	// Time is when the controller made the announcement.
	Time metav1.MicroTime `json:"time"`
	// Phase is the task's phase when it was made.
	Phase string `json:"phase,omitempty"`
	// Reason and Message are the task's Ready condition's (or the Stalled condition's for
	// stalled), bounded.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Entry and Milestone: for progress, the entry's type and the percentage crossed.
	Entry     string `json:"entry,omitempty"`
	Milestone int32  `json:"milestone,omitempty"`
}

// Type is the announcement's CloudEvent type.
func (a Announcement) Type() string { return TypePrefix + a.What + ".v1" }

// ID is the announcement's CloudEvent id: the task's UID and what was said, plus the milestone
// (progress) or the sequence number (what can happen more than once: suspended, resumed,
// stalled, unstalled). The same announcement always has the same id, so a receiver drops a
// repeat by (source, id).
func (a Announcement) ID(uid types.UID) string {
	switch a.What {
	case Progress:
		return fmt.Sprintf("%s.%s.%s.%d", uid, a.What, a.Entry, a.Milestone)
	case Suspended, Resumed, Stalled, Unstalled:
		return fmt.Sprintf("%s.%s.%d", uid, a.What, a.Seq)
	default:
		return fmt.Sprintf("%s.%s", uid, a.What)
	}
}

// Outbox is what a task's record holds for the Notifier: the announcements made and not known
// to be delivered, oldest first, and the Seq up to which every sink had taken them when the
// record was last written.
type Outbox struct {
	// Sent: announcements up to this Seq were delivered to every sink of the task.
	Sent int64 `json:"sent,omitempty"`
	// Pending are the announcements after Sent, oldest first.
	Pending []Announcement `json:"pending,omitempty"`

	// StartTime and CompletionTime are the task's as the record says (the status may not show
	// them yet when an announcement is sent); not kept in the outbox itself.
	StartTime      *metav1.Time `json:"-"`
	CompletionTime *metav1.Time `json:"-"`
}

// Last is the Seq of the newest announcement in the outbox, Sent when none is pending.
func (o Outbox) Last() int64 {
	if n := len(o.Pending); n > 0 {
		return o.Pending[n-1].Seq
	}
	return o.Sent
}
