package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// Deliveries is what the controller asks of the notifier (notify.Notifier): whether any sink
// takes a task's announcements, and up to which Seq every sink of the task took them.
type Deliveries interface {
	Wants(task *workflowv1alpha1.WorkflowTask) bool
	Delivered(task *workflowv1alpha1.WorkflowTask) int64
}

// Outbox reads the announcements a task's record holds for the notifier, with the task's start
// and completion as the record says.
func Outbox(task *workflowv1alpha1.WorkflowTask) notify.Outbox {
	rec := readRecord(task)
	var ob notify.Outbox
	if rec.Outbox != nil {
		ob = *rec.Outbox
	}
	ob.StartTime, ob.CompletionTime = rec.StartTime, rec.CompletionTime
	return ob
}

// announceInto makes this reconcile's announcements: from what the record says was announced
// (stored when the record was read, rec as trusted and advanced) to the status about to be
// written. They go into the record's outbox when a sink takes the task; delivered
// ones leave it with a write the record gets anyway, or once the task finished. It returns the
// record to write, the announcements, and the Events to record (the announcements', and a
// NotificationDropped when the outbox overflowed).
func (r *WorkflowTaskReconciler) announceInto(task *workflowv1alpha1.WorkflowTask, stored, rec taskRecord,
	status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) (taskRecord, []event) {
	prev := rec.Announced
	if prev.Phase == "" && (stored.StartTime != nil || stored.finished() || (stored.empty() && statusPastQueued(task))) {
		// A record from before announcements were kept, or one rebuilt: what the status the
		// controller computed shows counts as said (never the status read back, which a pod
		// could have forged to silence the task).
		prev = seedAnnounced(status, now)
	}
	var anns []notify.Announcement
	rec.Announced, anns = announce(prev, status, now)
	events := announcementEvents(anns)
	// No sink for the task: the outbox stays as it is (removing it would write every task's
	// record when a sink is removed); nothing new to keep: none is started (adding a sink does
	// not write every finished task's record either).
	if r.Deliveries == nil || !r.Deliveries.Wants(task) || (len(anns) == 0 && rec.Outbox == nil) {
		return rec, events
	}
	var ob notify.Outbox
	if rec.Outbox != nil {
		ob.Sent = rec.Outbox.Sent
		ob.Pending = append(ob.Pending, rec.Outbox.Pending...)
	}
	ob.Pending = append(ob.Pending, anns...)
	rec.Outbox = &ob
	if !recordEqual(stored, rec) || rec.finished() {
		ob = trimOutbox(ob, r.Deliveries.Delivered(task))
	}
	if n := len(ob.Pending) - maxOutbox; n > 0 {
		notify.Dropped("any", "outbox_full", n)
		events = append(events, event{corev1.EventTypeWarning, EventNotificationDropped, "Notify",
			fmt.Sprintf("%d announcements (up to %s) were never delivered to every sink and no longer fit the task's record", n, ob.Pending[n-1].Type())})
		ob.Sent, ob.Pending = ob.Pending[n-1].Seq, ob.Pending[n:]
	}
	rec.Outbox = &ob
	return rec, events
}

// trimOutbox drops the announcements every sink took (up to delivered).
func trimOutbox(ob notify.Outbox, delivered int64) notify.Outbox {
	if delivered <= ob.Sent {
		return ob
	}
	ob.Sent = min(delivered, ob.Last())
	i := 0
	for i < len(ob.Pending) && ob.Pending[i].Seq <= ob.Sent {
		i++
	}
	ob.Pending = ob.Pending[i:]
	return ob
}

// SetupNotifier delivers the task's announcements to the sinks of cfg (none: nothing to do):
// it adds a notify.Notifier to the manager (run by the leader), keeps announcements in the
// records until the notifier delivered them, and wakes a finished task once its last one was,
// so its record says so. Call it before SetupWithManager.
func (r *WorkflowTaskReconciler) SetupNotifier(mgr ctrl.Manager, cfg notify.Config) error {
	if len(cfg.Sinks) == 0 {
		return nil
	}
	delivered := make(chan ctrlevent.TypedGenericEvent[*workflowv1alpha1.WorkflowTask], 1024)
	wake := func(ctx context.Context, key types.NamespacedName) {
		select {
		case delivered <- ctrlevent.TypedGenericEvent[*workflowv1alpha1.WorkflowTask]{Object: &workflowv1alpha1.WorkflowTask{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}:
		case <-ctx.Done(): // stopping: the next leader's controller writes it
		}
	}
	n, err := notify.New(cfg, mgr.GetCache(), Outbox, mgr.GetEventRecorder("workflowtask-notifier"), wake)
	if err != nil {
		return fmt.Errorf("setting up notifications: %w", err)
	}
	if err := mgr.Add(n); err != nil {
		return fmt.Errorf("setting up notifications: %w", err)
	}
	r.Deliveries, r.Delivered = n, delivered
	return nil
}
