package controllers

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// maxAnnouncementMessage bounds the message an announcement keeps (in the record until it is
// delivered, and in the CloudEvent).
const maxAnnouncementMessage = 1024

// maxOutbox is how many undelivered announcements a task's record keeps; older ones are dropped
// (counted, and said in a NotificationDropped Event) when a sink stays down that long.
const maxOutbox = 32

// milestones are the percentages a progress entry with a total is announced at.
var milestones = []int32{25, 50, 75, 100}

// announcedState is what the controller has announced about a task so far, kept in its record:
// announcements are made for the difference between it and the task's new status, so each
// transition is announced once however often (or from however stale a copy) it is reconciled,
// and a forged status announces nothing.
type announcedState struct {
	// Phase is the phase last announced; empty before the first announcement.
	Phase workflowv1alpha1.TaskPhase `json:"phase,omitempty"`
	// Started: the task was announced started (it is announced once, a resume is "resumed").
	Started bool `json:"started,omitempty"`
	// Stalled: the task was announced stalled and not yet un-stalled.
	Stalled bool `json:"stalled,omitempty"`
	// Milestones is, per progress entry, the highest percentage announced.
	Milestones map[string]int32 `json:"milestones,omitempty"`
	// Seq is the number of announcements made.
	Seq int64 `json:"seq,omitempty"`
}

// vocabulary says each announcement as a Kubernetes Event: the Event's type, reason and action.
// The CloudEvent of the same announcement has the type dev.taskops.workflowtask.<what>.v1
// (controllers/notify); docs/notifications.md lists both.
var vocabulary = map[string]struct{ eventType, reason, action string }{
	notify.Queued:    {corev1.EventTypeNormal, EventQueued, "Queue"},
	notify.Started:   {corev1.EventTypeNormal, EventProcessing, "Start"},
	notify.Suspended: {corev1.EventTypeNormal, EventSuspended, "Suspend"},
	notify.Resumed:   {corev1.EventTypeNormal, EventResumed, "Resume"},
	notify.Stalled:   {corev1.EventTypeWarning, EventProgressStalled, "DetectStall"},
	notify.Unstalled: {corev1.EventTypeNormal, EventProgressResumed, "DetectStall"},
	notify.Progress:  {corev1.EventTypeNormal, EventProgressMilestone, "Progress"},
	notify.Succeeded: {corev1.EventTypeNormal, EventCompleted, "Complete"},
	notify.Failed:    {corev1.EventTypeWarning, EventFailed, "Fail"},
	notify.Canceled:  {corev1.EventTypeNormal, EventCanceled, "Cancel"},
}

// announce returns what to announce on the way from what was announced (prev) to status, and
// the announced state after it. Pure. Order: the phase's start (queued, started, resumed),
// un-stalled, progress milestones, stalled, then suspended or the verdict. Nothing is
// announced after a verdict.
func announce(prev announcedState, status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) (announcedState, []notify.Announcement) {
	if prev.Phase.IsFinished() || status.Phase == "" {
		return prev, nil
	}
	next := prev
	next.Milestones = make(map[string]int32, len(prev.Milestones))
	for k, v := range prev.Milestones {
		next.Milestones[k] = v
	}
	var out []notify.Announcement
	at := metav1.NewMicroTime(now.UTC().Truncate(time.Microsecond))
	ready := meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionReady)
	say := func(what string, cond *metav1.Condition) *notify.Announcement {
		next.Seq++
		a := notify.Announcement{Seq: next.Seq, What: what, Time: at, Phase: string(status.Phase)}
		if cond != nil {
			a.Reason, a.Message = cond.Reason, truncateUTF8(cond.Message, maxAnnouncementMessage)
		}
		out = append(out, a)
		return &out[len(out)-1]
	}
	phase, changed := status.Phase, status.Phase != prev.Phase
	switch {
	case !changed:
	case phase == workflowv1alpha1.TaskPhaseQueued && prev.Phase == "":
		say(notify.Queued, ready)
	case phase == workflowv1alpha1.TaskPhaseProcessing && !prev.Started:
		say(notify.Started, ready)
	case (phase == workflowv1alpha1.TaskPhaseProcessing || phase == workflowv1alpha1.TaskPhaseQueued) &&
		prev.Phase == workflowv1alpha1.TaskPhaseSuspending:
		say(notify.Resumed, ready)
	}
	if phase == workflowv1alpha1.TaskPhaseProcessing {
		next.Started = true
	}
	stalled := phase == workflowv1alpha1.TaskPhaseProcessing && isStalledByProgress(status)
	if prev.Stalled && !stalled && phase == workflowv1alpha1.TaskPhaseProcessing {
		say(notify.Unstalled, meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionStalled))
	}
	for _, p := range sortedProgress(status.Progress) {
		if m := milestone(p); m > next.Milestones[p.Type] {
			a := say(notify.Progress, nil)
			a.Entry, a.Milestone = p.Type, m
			next.Milestones[p.Type] = m
		}
	}
	if stalled && !prev.Stalled {
		say(notify.Stalled, meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionStalled))
	}
	next.Stalled = stalled
	if changed {
		switch phase {
		case workflowv1alpha1.TaskPhaseSuspending:
			say(notify.Suspended, meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionSuspended))
		case workflowv1alpha1.TaskPhaseCompleted:
			say(notify.Succeeded, ready)
		case workflowv1alpha1.TaskPhaseError:
			say(notify.Failed, ready)
		case workflowv1alpha1.TaskPhaseCanceled:
			say(notify.Canceled, ready)
		}
	}
	next.Phase = phase
	if len(next.Milestones) == 0 {
		next.Milestones = nil
	}
	return next, out
}

// milestone is the highest milestone an entry has reached: 0 for none, or an entry without a
// total. A jump past several milestones is one announcement, of the highest.
func milestone(p workflowv1alpha1.ProgressEntry) int32 {
	if p.Total <= 0 {
		return 0
	}
	pct := min(p.Current, p.Total) * 100 / p.Total
	var reached int32
	for _, m := range milestones {
		if pct >= int64(m) {
			reached = m
		}
	}
	return reached
}

func sortedProgress(ps []workflowv1alpha1.ProgressEntry) []workflowv1alpha1.ProgressEntry {
	out := append([]workflowv1alpha1.ProgressEntry(nil), ps...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// seedAnnounced is the announced state of a task the controller announced nothing about yet
// although it has been running (a record written before announcements existed, or rebuilt after
// it was lost): everything the status shows counts as announced, so nothing is said twice.
func seedAnnounced(status *workflowv1alpha1.WorkflowTaskStatus, now time.Time) announcedState {
	seeded, _ := announce(announcedState{}, status, now)
	seeded.Seq = 0
	return seeded
}

// announcementEvents are the Kubernetes Events of announcements, in the vocabulary above.
func announcementEvents(anns []notify.Announcement) []event {
	var out []event
	for _, a := range anns {
		v, ok := vocabulary[a.What]
		if !ok {
			continue
		}
		note, ok := defaultNotes[a.What]
		switch {
		case a.What == notify.Progress:
			note = progressNote(a)
		case !ok:
			note = a.Message
		}
		out = append(out, event{v.eventType, v.reason, v.action, note})
	}
	return out
}

func progressNote(a notify.Announcement) string {
	return fmt.Sprintf("Progress %s reached %d%%", a.Entry, a.Milestone)
}

// defaultNotes are the notes of Events whose announcement has no message of its own.
var defaultNotes = map[string]string{
	notify.Queued:    "Waiting for the Job's pods",
	notify.Suspended: msgSuspended,
	notify.Resumed:   msgResumed,
	notify.Unstalled: "Progress is moving again",
	notify.Canceled:  msgCanceled,
}
