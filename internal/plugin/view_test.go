package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var t0 = testutil.T0

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// step is the task as the watch saw it at a moment.
type step struct {
	at   float64
	task *workflowv1alpha1.WorkflowTask
}

func running() *testutil.TaskWrapper {
	return testutil.MakeTask("up", "ns").ID("mA7mF4xyzQ").Phase(workflowv1alpha1.TaskPhaseProcessing)
}

func TestRows(t *testing.T) {
	header := Row{Key: "ns/up", Kind: RowTask, Task: "ns/up", Text: "Processing  upload  owner alice  ID mA7mF4xyzQ"}
	entry := func(typ, text string, current, total int64) Row {
		return Row{Key: "ns/up/entry/" + typ, Kind: RowEntry, Task: "ns/up", Label: typ, Text: text, Current: current, Total: total}
	}
	for _, tc := range []struct {
		name  string
		steps []step
		now   float64
		want  []Row
	}{{
		name:  "first sight: no rate, ETA unknown",
		steps: []step{{0, running().Progress("upload", 1024, 4096, at(0)).Obj()}},
		want:  []Row{header, entry("upload", "1.0 KiB / 4.0 KiB  25%  ETA ?", 1024, 4096)},
	}, {
		name: "steady: rate from successive values and update times, ETA from what is left",
		steps: []step{
			{0, running().Progress("upload", 1024, 4096, at(0)).Obj()},
			{1, running().Progress("upload", 2048, 4096, at(1)).Obj()},
		},
		now:  1,
		want: []Row{header, entry("upload", "2.0 KiB / 4.0 KiB  50%  1.0 KiB/s  ETA 2s", 2048, 4096)},
	}, {
		name: "bursty: a burst after a pause averages out (EWMA), not the instant rate",
		steps: []step{
			{0, running().Progress("upload", 0, 100<<20, at(0)).Obj()},
			{1, running().Progress("upload", 1<<20, 100<<20, at(1)).Obj()},
			{6, running().Progress("upload", 11<<20, 100<<20, at(6)).Obj()},
		},
		now: 6,
		// 1 MiB/s, then 10 MiB over 5 s (2 MiB/s): 1 + (1-e^(-0.5))·1 ≈ 1.39 MiB/s; 89 MiB left ≈ 64 s.
		want: []Row{header, entry("upload", "11.0 MiB / 100.0 MiB  11%  1.4 MiB/s  ETA 1m04s", 11<<20, 100<<20)},
	}, {
		name: "stalled: no change for 30 s, no rate and no ETA",
		steps: []step{
			{0, running().Progress("upload", 1024, 4096, at(0)).Obj()},
			{1, running().Progress("upload", 2048, 4096, at(1)).Obj()},
		},
		now:  31,
		want: []Row{header, entry("upload", "2.0 KiB / 4.0 KiB  50%  stalled", 2048, 4096)},
	}, {
		name: "unknown total: the amount as n / ?, a rate, no share and no ETA",
		steps: []step{
			{0, running().Progress("upload", 1024, 0, at(0)).Obj()},
			{2, running().Progress("upload", 3072, 0, at(2)).Obj()},
		},
		now:  2,
		want: []Row{header, entry("upload", "3.0 KiB / ?  1.0 KiB/s", 3072, 0)},
	}, {
		name:  "counts as n/m, their rate per second, the identifier last",
		steps: []step{{0, running().Progress("upload_count", 3, 6, at(0)).ProgressIdentifier("/dst/a.bin").Obj()}},
		want:  []Row{header, entry("upload_count", "3/6  50%  ETA ?  /dst/a.bin", 3, 6)},
	}, {
		name: "entries in natural order; an entry removed is gone from the view",
		steps: []step{
			{0, running().Progress("upload_single_10", 1, 2, at(0)).Progress("upload_single_2", 1, 2, at(0)).Progress("upload", 1, 2, at(0)).Progress("upload_single_3", 1, 2, at(0)).Obj()},
			{1, running().Progress("upload_single_10", 2, 2, at(1)).Progress("upload_single_2", 1, 2, at(0)).Progress("upload", 1, 2, at(0)).Obj()},
		},
		now: 1,
		want: []Row{header,
			entry("upload", "1 B / 2 B  50%  ETA ?", 1, 2),
			entry("upload_single_2", "1 B / 2 B  50%  ETA ?", 1, 2),
			entry("upload_single_10", "2 B / 2 B  100%  1 B/s", 2, 2),
		},
	}, {
		name: "a stalled task's message under its bars; control characters from the pod are spaces",
		steps: []step{{0, running().Progress("upload", 1, 2, at(0)).
			ConditionAt(workflowv1alpha1.ConditionStalled, metav1.ConditionTrue, workflowv1alpha1.ReasonProgressDeadlineExceeded, "no progress\x1b[2J for 5m", at(0)).Obj()}},
		want: []Row{header, entry("upload", "1 B / 2 B  50%  ETA ?", 1, 2),
			{Key: "ns/up/message/Stalled", Kind: RowMessage, Task: "ns/up", Text: "Stalled: no progress [2J for 5m"}},
	}, {
		name:  "an owner with control characters cannot reach the terminal",
		steps: []step{{0, running().Owner("eve\x1b]0;pwned\x07\r\n").Obj()}},
		want:  []Row{{Key: "ns/up", Kind: RowTask, Task: "ns/up", Text: "Processing  upload  owner eve ]0;pwned     ID mA7mF4xyzQ"}},
	}, {
		name:  "a task nobody reconciled yet is Pending",
		steps: []step{{0, testutil.MakeTask("up", "ns").Obj()}},
		want:  []Row{{Key: "ns/up", Kind: RowTask, Task: "ns/up", Text: "Pending  upload  owner alice"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTaskView(true)
			for _, s := range tc.steps {
				v.observe(s.task, at(s.at))
				v.rows(at(s.at))
			}
			if diff := cmp.Diff(tc.want, v.rows(at(tc.now))); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNaturalLess(t *testing.T) {
	got := []string{"upload_single_10", "b", "upload_single_2", "upload", "upload_single_02", "a10", "a9", "upload_count"}
	sort.Slice(got, func(i, j int) bool { return naturalLess(got[i], got[j]) })
	want := []string{"a9", "a10", "b", "upload", "upload_count", "upload_single_02", "upload_single_2", "upload_single_10"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// Plain output: a line per change of what a row shows, none for the clock alone, and no
// escape code even when a pod wrote some into its messages or entry types.
func TestPlainRenderer(t *testing.T) {
	var out bytes.Buffer
	clock := at(0)
	r := newPlainRenderer(&out, func() time.Time { return clock })
	f := &follower{views: map[string]*taskView{}, visible: true, single: true, now: func() time.Time { return clock }}
	show := func(task *workflowv1alpha1.WorkflowTask) {
		f.apply(event{task: task})
		r.Update(f.rows())
	}
	show(running().Progress("upload", 1024, 4096, at(0)).Obj())
	clock = at(1)
	r.Update(f.rows()) // the clock moved, nothing changed: no line
	show(running().Progress("upload", 2048, 4096, at(1)).Obj())
	show(running().Progress("upload", 2048, 4096, at(1)).Obj()) // the same again: no line
	clock = at(2)
	show(running().Phase(workflowv1alpha1.TaskPhaseError).Progress("upload", 4096, 4096, at(2)).
		ConditionAt(workflowv1alpha1.ConditionFailed, metav1.ConditionTrue, "JobFailed", "evil\x1b]0;title\x07", at(2)).Obj())
	code, done := f.done()
	r.Close(f.lines())
	want := `06:00:00 ns/up  Processing  upload  owner alice  ID mA7mF4xyzQ
06:00:00 ns/up  upload  1.0 KiB / 4.0 KiB  25%  ETA ?
06:00:01 ns/up  upload  2.0 KiB / 4.0 KiB  50%  1.0 KiB/s  ETA 2s
06:00:02 ns/up  Error  upload  owner alice  ID mA7mF4xyzQ
06:00:02 ns/up  upload  4.0 KiB / 4.0 KiB  100%
06:00:02 ns/up  Failed: evil ]0;title 
ns/up: Error (evil ]0;title )
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("plain output (-want +got):\n%s", diff)
	}
	if bytes.ContainsRune(out.Bytes(), 0x1b) {
		t.Error("plain output holds an escape code")
	}
	if !done || code != ExitFailed {
		t.Errorf("done = %v, code %d; want done with %d", done, code, ExitFailed)
	}
}

func TestFollowerExitCodes(t *testing.T) {
	task := func(name string, p workflowv1alpha1.TaskPhase) *workflowv1alpha1.WorkflowTask {
		return testutil.MakeTask(name, "ns").Phase(p).Obj()
	}
	stream := func(entries ...workflowv1alpha1.ProgressEntry) *workflowv1alpha1.WorkflowTask {
		t := &workflowv1alpha1.WorkflowTask{}
		t.Name, t.Status.Progress = "ID x", entries
		return t
	}
	for _, tc := range []struct {
		name     string
		visible  bool
		single   bool
		events   []event
		wantDone bool
		wantCode int
	}{
		{name: "nothing seen yet", visible: true},
		{name: "completed", visible: true, single: true, events: []event{{task: task("a", workflowv1alpha1.TaskPhaseCompleted)}}, wantDone: true, wantCode: ExitCompleted},
		{name: "error", visible: true, single: true, events: []event{{task: task("a", workflowv1alpha1.TaskPhaseError)}}, wantDone: true, wantCode: ExitFailed},
		{name: "canceled", visible: true, single: true, events: []event{{task: task("a", workflowv1alpha1.TaskPhaseCanceled)}}, wantDone: true, wantCode: ExitCanceled},
		{name: "still processing", visible: true, single: true, events: []event{{task: task("a", workflowv1alpha1.TaskPhaseProcessing)}}},
		{name: "deleted while followed", visible: true, single: true, events: []event{{task: task("a", workflowv1alpha1.TaskPhaseProcessing)}, {task: task("a", ""), deleted: true}}, wantDone: true, wantCode: ExitFailed},
		{name: "many: one still running", visible: true, events: []event{{isSync: true, sync: []workflowv1alpha1.WorkflowTask{
			*task("a", workflowv1alpha1.TaskPhaseCompleted), *task("b", workflowv1alpha1.TaskPhaseQueued)}}}},
		{name: "many: canceled and completed", visible: true, events: []event{{isSync: true, sync: []workflowv1alpha1.WorkflowTask{
			*task("a", workflowv1alpha1.TaskPhaseCompleted), *task("b", workflowv1alpha1.TaskPhaseCanceled)}}}, wantDone: true, wantCode: ExitCanceled},
		{name: "many: an error wins", visible: true, events: []event{{isSync: true, sync: []workflowv1alpha1.WorkflowTask{
			*task("a", workflowv1alpha1.TaskPhaseError), *task("b", workflowv1alpha1.TaskPhaseCanceled)}}}, wantDone: true, wantCode: ExitFailed},
		{name: "many: one deleted, the rest done", visible: true, events: []event{{isSync: true, sync: []workflowv1alpha1.WorkflowTask{
			*task("a", workflowv1alpha1.TaskPhaseCompleted), *task("b", workflowv1alpha1.TaskPhaseQueued)}}, {task: task("b", ""), deleted: true}}, wantDone: true},
		{name: "stream: empty body (unknown, a stranger's, or no progress yet)", single: true, events: []event{{task: stream()}}},
		{name: "stream: an unknown total", single: true, events: []event{{task: stream(workflowv1alpha1.ProgressEntry{Type: "upload", Current: 5})}}},
		{name: "stream: every total reached", single: true, events: []event{{task: stream(
			workflowv1alpha1.ProgressEntry{Type: "upload", Current: 5, Total: 5}, workflowv1alpha1.ProgressEntry{Type: "upload_count", Current: 2, Total: 2})}}, wantDone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &follower{views: map[string]*taskView{}, visible: tc.visible, single: tc.single, now: func() time.Time { return t0 }}
			for _, ev := range tc.events {
				f.apply(ev)
			}
			code, done := f.done()
			if done != tc.wantDone || code != tc.wantCode {
				t.Errorf("done() = %d, %v; want %d, %v", code, done, tc.wantCode, tc.wantDone)
			}
		})
	}
}

// blockingSource sends nothing and ends with its context (or fails at once with err).
type blockingSource struct{ err error }

func (s blockingSource) run(ctx context.Context, _ chan<- event) error {
	if s.err != nil {
		return s.err
	}
	<-ctx.Done()
	return fmt.Errorf("watching workflowtasks: %w", ctx.Err())
}
func (blockingSource) phaseVisible() bool { return true }
func (blockingSource) singleTask() bool   { return true }

// How a watch ends when the task does not: --timeout (3), Ctrl-C (130), the source failing (4).
func TestFollowEnds(t *testing.T) {
	deadline, cancelDeadline := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelDeadline()
	interrupted, interrupt := context.WithCancel(context.Background())
	interrupt()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		src      source
		wantCode int
		wantLast string
		wantErr  bool
	}{
		{"timeout", deadline, blockingSource{}, ExitTimeout, "timed out after 50ms", false},
		{"interrupted", interrupted, blockingSource{}, ExitInterrupted, "interrupted", false},
		{"the source failed", context.Background(), blockingSource{err: errors.New("forbidden")}, ExitCannotWatch, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code, err := follow(tc.ctx, tc.src, newPlainRenderer(&out, time.Now), time.Now, 50*time.Millisecond)
			if code != tc.wantCode || (err != nil) != tc.wantErr || !strings.HasSuffix(out.String(), tc.wantLast+"\n") && tc.wantLast != "" {
				t.Errorf("follow = %d, %v, output %q; want %d, error %v, ending with %q", code, err, out.String(), tc.wantCode, tc.wantErr, tc.wantLast)
			}
		})
	}
}

// A watch that ends at once is followed by a growing wait before the next list; one that
// lasted is followed by none.
func TestRelistWait(t *testing.T) {
	var got []time.Duration
	wait := time.Duration(0)
	for _, lasted := range []time.Duration{0, time.Second, 0, 0, 0, 0, 0, 0, 0, time.Minute, 0} {
		wait = relistWait(lasted, wait)
		got = append(got, wait)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second, 0, 500 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
}

func TestPodReason(t *testing.T) {
	waiting := func(name, reason, msg string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
	}
	terminated := func(name, reason string, code int32) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code}}}
	}
	pod := func(phase corev1.PodPhase, statuses ...corev1.ContainerStatus) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: phase, ContainerStatuses: statuses}}
	}
	unschedulable := pod(corev1.PodPending)
	unschedulable.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: "Unschedulable", Message: "0/1 nodes are available: 1 Insufficient memory."}}
	initWaiting := pod(corev1.PodPending)
	initWaiting.Status.InitContainerStatuses = []corev1.ContainerStatus{waiting("progress", "ErrImagePull", "pull access denied")}
	for name, tc := range map[string]struct {
		pod  *corev1.Pod
		want string
	}{
		"image pull": {pod(corev1.PodPending, waiting("worker", "ImagePullBackOff", `Back-off pulling image "nope:1"`)),
			`container worker: ImagePullBackOff: Back-off pulling image "nope:1"`},
		"crash loop": {pod(corev1.PodRunning, waiting("worker", "CrashLoopBackOff", "back-off 10s restarting failed container")),
			"container worker: CrashLoopBackOff: back-off 10s restarting failed container"},
		"OOM killed":         {pod(corev1.PodFailed, terminated("worker", "OOMKilled", 137)), "container worker: OOMKilled (exit code 137)"},
		"failed":             {pod(corev1.PodFailed, terminated("worker", "Error", 3)), "container worker: Error (exit code 3)"},
		"unschedulable":      {unschedulable, "Pending: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."},
		"init container":     {initWaiting, "container progress: ErrImagePull: pull access denied"},
		"creating":           {pod(corev1.PodPending, waiting("worker", "ContainerCreating", "")), ""},
		"running":            {pod(corev1.PodRunning, corev1.ContainerStatus{Name: "worker", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}), ""},
		"succeeded":          {pod(corev1.PodSucceeded, terminated("worker", "Completed", 0)), ""},
		"pending, scheduled": {pod(corev1.PodPending), ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := podReason(tc.pod); got != tc.want {
				t.Errorf("podReason = %q, want %q", got, tc.want)
			}
		})
	}
}

// A pod that is not doing its work shows under its task (whether it or the task was seen
// first), one line, without escape codes; gone with the pod, and not shown once the task
// finished.
func TestWatchShowsPodReasons(t *testing.T) {
	var out bytes.Buffer
	clock := at(0)
	r := newPlainRenderer(&out, func() time.Time { return clock })
	f := &follower{views: map[string]*taskView{}, visible: true, single: true, now: func() time.Time { return clock }}
	crashing := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "up-x7k2p", Labels: map[string]string{workflowv1alpha1.LabelTaskName: "up"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "worker",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 10s\x1b[2J restarting"}}}}},
	}
	f.apply(event{pod: crashing})
	f.apply(event{task: running().Obj()})
	r.Update(f.rows())
	clock = at(1)
	f.apply(event{pod: crashing, deleted: true})
	r.Update(f.rows())
	want := `06:00:00 ns/up  Processing  upload  owner alice  ID mA7mF4xyzQ
06:00:00 ns/up  pod up-x7k2p: container worker: CrashLoopBackOff: back-off 10s [2J restarting
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("plain output (-want +got):\n%s", diff)
	}
	if len(f.rows()) != 1 {
		t.Errorf("rows after the pod went: %+v", f.rows())
	}
}

// A pod's log line reaches the terminal without its control characters (escape codes,
// carriage returns, bidi overrides), tabs kept, never shortened.
func TestPrintableLogLine(t *testing.T) {
	long := strings.Repeat("x", 5000)
	for in, want := range map[string]string{
		"plain\tline":                 "plain\tline",
		"\x1b[2J\x1b]0;pwned\x07done": " [2J ]0;pwned done",
		"progress 50%\rprogress 60%":  "progress 50% progress 60%",
		"a\u202eb":                    "a b",
		long:                          long,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
