package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// said is an announcement in short: what, entry/milestone, seq.
type said struct {
	What      string
	Entry     string
	Milestone int32
	Seq       int64
}

func summarizeAnnouncements(as []notify.Announcement) []said {
	var out []said
	for _, a := range as {
		out = append(out, said{a.What, a.Entry, a.Milestone, a.Seq})
	}
	return out
}

func statusOf(w *testutil.TaskWrapper) *workflowv1alpha1.WorkflowTaskStatus { return &w.Obj().Status }

// A task's life, step by step: each transition announced once, in order, milestones at the
// highest crossed, nothing for a status that did not change or after the verdict.
func TestAnnounce(t *testing.T) {
	task := func() *testutil.TaskWrapper { return testutil.MakeTask("t", "ns") }
	processing := func() *testutil.TaskWrapper { return task().Phase(workflowv1alpha1.TaskPhaseProcessing) }
	stalled := func() *testutil.TaskWrapper {
		return processing().Condition(workflowv1alpha1.ConditionStalled, "True", workflowv1alpha1.ReasonProgressDeadlineExceeded)
	}
	steps := []struct {
		name   string
		status *workflowv1alpha1.WorkflowTaskStatus
		want   []said
	}{
		{"no phase yet", statusOf(task()), nil},
		{"queued", statusOf(task().Phase(workflowv1alpha1.TaskPhaseQueued)), []said{{notify.Queued, "", 0, 1}}},
		{"queued again", statusOf(task().Phase(workflowv1alpha1.TaskPhaseQueued)), nil},
		{"started at 10%", statusOf(processing().Progress("upload", 10, 100, t0)), []said{{notify.Started, "", 0, 2}}},
		{"30%: 25", statusOf(processing().Progress("upload", 30, 100, t0)), []said{{notify.Progress, "upload", 25, 3}}},
		{"jump to 80%: only 75", statusOf(processing().Progress("upload", 80, 100, t0)), []said{{notify.Progress, "upload", 75, 4}}},
		{"back to 60%: nothing", statusOf(processing().Progress("upload", 60, 100, t0)), nil},
		{"no total: never a milestone", statusOf(processing().Progress("upload", 80, 100, t0).Progress("count", 9, 0, t0)), nil},
		{"stalled", statusOf(stalled().Progress("upload", 80, 100, t0)), []said{{notify.Stalled, "", 0, 5}}},
		{"still stalled", statusOf(stalled().Progress("upload", 80, 100, t0)), nil},
		{"moving again past 100%", statusOf(processing().Progress("upload", 120, 100, t0)),
			[]said{{notify.Unstalled, "", 0, 6}, {notify.Progress, "upload", 100, 7}}},
		{"suspended", statusOf(task().Phase(workflowv1alpha1.TaskPhaseSuspending)), []said{{notify.Suspended, "", 0, 8}}},
		{"resumed, queued", statusOf(task().Phase(workflowv1alpha1.TaskPhaseQueued)), []said{{notify.Resumed, "", 0, 9}}},
		{"running again: not started twice", statusOf(processing()), nil},
		{"stalled again", statusOf(stalled()), []said{{notify.Stalled, "", 0, 10}}},
		{"failed", statusOf(task().Phase(workflowv1alpha1.TaskPhaseError).Progress("other", 50, 100, t0)),
			[]said{{notify.Progress, "other", 50, 11}, {notify.Failed, "", 0, 12}}},
		{"nothing after the verdict", statusOf(task().Phase(workflowv1alpha1.TaskPhaseCompleted).Progress("other", 100, 100, t0)), nil},
	}
	var state announcedState
	for i, step := range steps {
		var got []notify.Announcement
		state, got = announce(state, step.status, t0.Add(time.Duration(i)*time.Second))
		if diff := cmp.Diff(step.want, summarizeAnnouncements(got), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("step %d %q: announcements (-want +got):\n%s", i, step.name, diff)
		}
		if len(announcementEvents(got)) != len(got) {
			t.Errorf("step %d %q: %d announcements, %d Events", i, step.name, len(got), len(announcementEvents(got)))
		}
	}
}

// Each announcement says the same as an Event and as a CloudEvent: one vocabulary.
func TestAnnouncementVocabulary(t *testing.T) {
	for _, what := range []string{notify.Queued, notify.Started, notify.Suspended, notify.Resumed, notify.Stalled,
		notify.Unstalled, notify.Progress, notify.Succeeded, notify.Failed, notify.Canceled} {
		if _, ok := vocabulary[what]; !ok {
			t.Errorf("%s has no Event reason", what)
		}
	}
	events := announcementEvents([]notify.Announcement{
		{What: notify.Started, Message: "Pod p is running"},
		{What: notify.Progress, Entry: "upload", Milestone: 50},
		{What: notify.Resumed, Message: "ignored: the Event says the usual"},
	})
	want := []event{
		{"Normal", EventProcessing, "Start", "Pod p is running"},
		{"Normal", EventProgressMilestone, "Progress", "Progress upload reached 50%"},
		{"Normal", EventResumed, "Resume", msgResumed},
	}
	if diff := cmp.Diff(want, events, cmp.AllowUnexported(event{})); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// A task announced nothing about while it ran (its record predates announcements, or was
// rebuilt) is seeded from its status: what it shows is not said again.
func TestSeedAnnounced(t *testing.T) {
	done := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseCompleted).Progress("upload", 100, 100, t0))
	if _, got := announce(seedAnnounced(done, t0), done, t0); len(got) != 0 {
		t.Errorf("a finished task seeded from its status announced %v", summarizeAnnouncements(got))
	}
	running := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Progress("upload", 60, 100, t0))
	later := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseCompleted).Progress("upload", 100, 100, t0))
	_, got := announce(seedAnnounced(running, t0), later, t0)
	want := []said{{notify.Progress, "upload", 100, 1}, {notify.Succeeded, "", 0, 2}}
	if diff := cmp.Diff(want, summarizeAnnouncements(got)); diff != "" {
		t.Errorf("after seeding a running task (-want +got):\n%s", diff)
	}
}

// The outbox keeps what was not delivered, in order, and never goes back.
func TestTrimOutbox(t *testing.T) {
	ob := notify.Outbox{Sent: 2, Pending: []notify.Announcement{{Seq: 3}, {Seq: 4}, {Seq: 5}}}
	cases := map[string]struct {
		delivered int64
		want      notify.Outbox
	}{
		"nothing new":       {1, ob},
		"two more":          {4, notify.Outbox{Sent: 4, Pending: []notify.Announcement{{Seq: 5}}}},
		"all":               {5, notify.Outbox{Sent: 5, Pending: []notify.Announcement{}}},
		"no sink: all gone": {1 << 62, notify.Outbox{Sent: 5, Pending: []notify.Announcement{}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, trimOutbox(ob, tc.delivered), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// A record without announcements (older, or rebuilt) is seeded from the status the controller
// computed, never from the one read back: a forged finished status does not silence the task.
func TestAnnounceIntoSeedsFromComputedStatus(t *testing.T) {
	r := &WorkflowTaskReconciler{}
	forged := testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseCompleted).Obj()
	stored := taskRecord{JobCreated: true, StartTime: ptr.To(metav1.NewTime(t0))}
	running := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing))
	rec, events := r.announceInto(forged, stored, stored, running, t0)
	if rec.Announced.Phase != workflowv1alpha1.TaskPhaseProcessing || len(events) != 0 {
		t.Fatalf("seeded %+v, events %v; want Processing, none", rec.Announced, events)
	}
	done := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseCompleted))
	if _, events := r.announceInto(forged, rec, rec, done, t0); len(events) != 1 || events[0].reason != EventCompleted {
		t.Errorf("the real completion: events %v, want %s", events, EventCompleted)
	}
}

// fixedDeliveries is a notifier that wants every task or none, and has delivered up to seq.
type fixedDeliveries struct {
	wants bool
	seq   int64
}

func (f fixedDeliveries) Wants(*workflowv1alpha1.WorkflowTask) bool      { return f.wants }
func (f fixedDeliveries) Delivered(*workflowv1alpha1.WorkflowTask) int64 { return f.seq }

// Adding or removing a sink does not rewrite the records of tasks that announce nothing new.
func TestAnnounceIntoLeavesQuietRecordsAlone(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Obj()
	done := statusOf(testutil.MakeTask("t", "ns").Phase(workflowv1alpha1.TaskPhaseCompleted))
	finished := taskRecord{JobCreated: true, Phase: workflowv1alpha1.TaskPhaseCompleted, CompletionTime: ptr.To(metav1.NewTime(t0)),
		Announced: announcedState{Phase: workflowv1alpha1.TaskPhaseCompleted, Started: true, Seq: 3}}
	withOutbox := finished
	withOutbox.Outbox = &notify.Outbox{Sent: 3}
	cases := map[string]struct {
		deliveries Deliveries
		rec        taskRecord
	}{
		"a sink added":   {fixedDeliveries{wants: true}, finished},
		"a sink removed": {fixedDeliveries{wants: false}, withOutbox},
		"no notifier":    {nil, withOutbox},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := &WorkflowTaskReconciler{Deliveries: tc.deliveries}
			if got, _ := r.announceInto(task, tc.rec, tc.rec, done, t0); !recordEqual(tc.rec, got) {
				t.Errorf("the record would be written: %+v → %+v", tc.rec, got)
			}
		})
	}
}
