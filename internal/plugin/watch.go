package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// refreshEvery is how often the live view recomputes rates, ETAs and stalls between changes.
const refreshEvery = time.Second

// barWidth is the width of a drawn bar, in cells.
const barWidth = 30

type watchOptions struct {
	*options
	allNamespaces bool
	selector      string
	timeout       time.Duration
	plain         bool
}

func newWatchCommand(o *options) *cobra.Command {
	w := &watchOptions{options: o}
	cmd := &cobra.Command{
		Use:   "watch (NAME | -l SELECTOR | -A)",
		Short: "Follow tasks live: a bar per progress entry, with rate and ETA",
		Long: `Follow one task (NAME), the tasks matching a label selector, or all tasks, live: a bar per
progress entry with its rate and ETA, the phase, and the message of a stalled, failed or
suspended task. On a terminal the view redraws in place; otherwise it prints a line per change.

It ends when the task(s) finish, with an exit code for scripts: 0 Completed, 1 Error,
2 Canceled, 3 --timeout passed, 4 the task could not be watched (not found, not allowed).

A user who may not read WorkflowTasks (a task's owner without RBAC) follows the task through
the progress endpoint's event stream, by name or with --id: the progress is the same, the
phase is not visible, and the watch ends when every entry with a known total reached it.`,
		Example: `  kubectl workflowtask watch upload-7f3a
  kubectl workflowtask watch -A
  kubectl workflowtask watch -l team=media --timeout 10m
  kubectl workflowtask watch --id mA7mF4xyzQ`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return w.run(cmd.Context(), cmd, args) },
	}
	cmd.Flags().BoolVarP(&w.allNamespaces, "all-namespaces", "A", false, "Watch the tasks of every namespace.")
	cmd.Flags().StringVarP(&w.selector, "selector", "l", "", "Watch the tasks matching this label selector.")
	cmd.Flags().DurationVar(&w.timeout, "timeout", 0, "Give up (exit code 3) after this long; 0 waits for ever.")
	cmd.Flags().BoolVar(&w.plain, "plain", false, "Print a line per change even on a terminal.")
	cmd.Flags().String("id", "", "Follow the task with this ID through the progress endpoint's event stream.")
	return cmd
}

func (w *watchOptions) run(ctx context.Context, cmd *cobra.Command, args []string) error {
	cannot := func(err error) error { return &exitError{code: ExitCannotWatch, err: err} }
	id, _ := cmd.Flags().GetString("id")
	name := ""
	if len(args) == 1 {
		name = args[0]
	}
	if n := btoi(name != "") + btoi(w.selector != "" || w.allNamespaces) + btoi(id != ""); n != 1 {
		return cannot(errors.New("watch takes a NAME, or -l SELECTOR and/or -A, or --id ID"))
	}
	if name != "" {
		if err := validName(name); err != nil {
			return cannot(err)
		}
	}
	if w.timeout < 0 {
		return cannot(fmt.Errorf("--timeout %s is negative", w.timeout))
	}
	src, err := w.source(ctx, name, id)
	if err != nil {
		return cannot(err)
	}
	if w.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.timeout)
		defer cancel()
	}
	code, err := follow(ctx, src, w.renderer(), w.now, w.timeout)
	if err != nil || code != ExitCompleted {
		return &exitError{code: code, err: err}
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// renderer is the live bars on a terminal, plain lines otherwise.
func (w *watchOptions) renderer() renderer {
	if f, ok := w.streams.Out.(*os.File); ok && !w.plain && term.IsTerminal(int(f.Fd())) {
		return newTTYRenderer(w.streams.Out, barWidth)
	}
	return newPlainRenderer(w.streams.Out, w.now)
}

// source picks where the tasks come from: a Kubernetes watch when the user may read the task,
// the progress endpoint's stream otherwise (or when asked for by --id).
func (w *watchOptions) source(ctx context.Context, name, id string) (source, error) {
	ns, err := w.namespace()
	if err != nil {
		return nil, err
	}
	if id != "" {
		if !workflowv1alpha1.IsValidTaskID(id) {
			return nil, fmt.Errorf("%q is not a task ID", id)
		}
		return w.streamSource(streamByID(id), "ID "+id)
	}
	c, err := w.client()
	if err != nil {
		return nil, err
	}
	if name == "" {
		sel, err := labels.Parse(w.selector)
		if err != nil {
			return nil, fmt.Errorf("bad selector: %w", err)
		}
		if w.allNamespaces {
			ns = ""
		}
		return &kubeSource{c: c, namespace: ns, raw: metav1.ListOptions{LabelSelector: sel.String()}}, nil
	}
	err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &workflowv1alpha1.WorkflowTask{})
	switch {
	case apierrors.IsForbidden(err):
		return w.streamSource(streamByName(ns, name), ns+"/"+name)
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("workflowtask %s/%s not found", ns, name)
	case err != nil:
		return nil, fmt.Errorf("reading workflowtask %s/%s: %w", ns, name, err)
	}
	return &kubeSource{c: c, namespace: ns, single: true, name: name,
		raw: metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}}, nil
}

// event is a change of one task or of one of its pods: its new state, or that it is gone. A list (sync) replaces
// every task the source knew.
type event struct {
	task *workflowv1alpha1.WorkflowTask
	// pod: a change of a task's pod (deleted: it is gone).
	pod     *corev1.Pod
	deleted bool
	sync    []workflowv1alpha1.WorkflowTask
	isSync  bool
}

// source sends the changes of the watched tasks until ctx ends or it fails.
type source interface {
	run(ctx context.Context, events chan<- event) error
	// phaseVisible: the tasks carry their phase and conditions (not the stream's progress map).
	phaseVisible() bool
	// single: one task is followed; it being deleted ends the watch.
	singleTask() bool
}

// kubeSource lists and watches WorkflowTasks, listing again whenever the watch ends (after a
// wait when it ended at once: relistWait).
type kubeSource struct {
	c         client.WithWatch
	namespace string
	raw       metav1.ListOptions
	single    bool
	// name is the one task followed ("" for a selector or all).
	name string
}

// podSelector selects the pods of the followed tasks: of the one task, or of any task.
func (s *kubeSource) podSelector() string {
	if s.name != "" {
		return workflowv1alpha1.LabelTaskName + "=" + s.name
	}
	return workflowv1alpha1.LabelTaskName
}

func (s *kubeSource) phaseVisible() bool { return true }
func (s *kubeSource) singleTask() bool   { return s.single }

// Relisting after a watch ends: a watch that lasted less than shortWatch (the server refused
// or closed it at once) is followed by a wait, doubling from minRelistWait up to
// maxRelistWait, so a failing server is not asked in a tight loop; a watch that lasted resets it.
const (
	shortWatch    = 5 * time.Second
	minRelistWait = 500 * time.Millisecond
	maxRelistWait = 30 * time.Second
)

// relistWait is the wait before listing again after a watch that lasted this long, given the
// previous wait (0 at first).
func relistWait(lasted, prev time.Duration) time.Duration {
	if lasted >= shortWatch {
		return 0
	}
	return min(max(2*prev, minRelistWait), maxRelistWait)
}

func (s *kubeSource) run(ctx context.Context, events chan<- event) error {
	go s.watchPods(ctx, s.podSelector(), events)
	var wait time.Duration
	for ctx.Err() == nil {
		list := &workflowv1alpha1.WorkflowTaskList{}
		raw := s.raw
		if err := s.c.List(ctx, list, client.InNamespace(s.namespace), &client.ListOptions{Raw: &raw}); err != nil {
			return fmt.Errorf("listing workflowtasks: %w", err)
		}
		if !send(ctx, events, event{isSync: true, sync: list.Items}) {
			return ctx.Err()
		}
		raw.ResourceVersion = list.ResourceVersion
		raw.AllowWatchBookmarks = true
		wi, err := s.c.Watch(ctx, &workflowv1alpha1.WorkflowTaskList{}, client.InNamespace(s.namespace), &client.ListOptions{Raw: &raw})
		if err != nil {
			return fmt.Errorf("watching workflowtasks: %w", err)
		}
		started := time.Now()
		if !drain(ctx, wi, events) {
			return ctx.Err()
		}
		if wait = relistWait(time.Since(started), wait); wait > 0 && !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// drain forwards a watch's task and pod events until it ends (false: ctx ended).
func drain(ctx context.Context, wi watch.Interface, events chan<- event) bool {
	defer wi.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return true
			}
			if ev.Type == watch.Error {
				return true // expired or refused: list again
			}
			e := event{deleted: ev.Type == watch.Deleted}
			switch o := ev.Object.(type) {
			case *workflowv1alpha1.WorkflowTask:
				e.task = o
			case *corev1.Pod:
				e.pod = o
			}
			if ev.Type == watch.Bookmark || (e.task == nil && e.pod == nil) {
				continue
			}
			if !send(ctx, events, e) {
				return false
			}
		}
	}
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func send(ctx context.Context, events chan<- event, ev event) bool {
	select {
	case events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// follow draws the source's tasks until they finish, ctx ends (--timeout, or Ctrl-C), or the
// source fails, and returns the exit code. A source's error after ctx ended is the end, not a
// failure.
func follow(ctx context.Context, src source, r renderer, now func() time.Time, timeout time.Duration) (int, error) {
	events := make(chan event, 16)
	srcErr := make(chan error, 1)
	srcCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { srcErr <- src.run(srcCtx, events) }()
	f := &follower{views: map[string]*taskView{}, visible: src.phaseVisible(), single: src.singleTask(), now: now}
	ended := func() (int, error) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.Close(append(f.lines(), fmt.Sprintf("timed out after %s", timeout)))
			return ExitTimeout, nil
		}
		r.Close(append(f.lines(), "interrupted"))
		return ExitInterrupted, nil
	}
	tick := time.NewTicker(refreshEvery)
	defer tick.Stop()
	for {
		select {
		case ev := <-events:
			f.apply(ev)
		case <-tick.C:
		case err := <-srcErr:
			if ctx.Err() != nil {
				return ended()
			}
			if err == nil {
				err = errors.New("the source of changes ended")
			}
			r.Close(f.lines())
			return ExitCannotWatch, err
		case <-ctx.Done():
			return ended()
		}
		r.Update(f.rows())
		if code, done := f.done(); done {
			r.Close(f.lines())
			return code, nil
		}
	}
}

// follower is the state of a watch: a view per task, the tasks that went away.
type follower struct {
	views map[string]*taskView
	// pods are the tasks' pods, by task key and pod name.
	pods    map[string]map[string]*corev1.Pod
	gone    []string
	visible bool
	single  bool
	seen    bool
	now     func() time.Time
}

func (f *follower) apply(ev event) {
	now := f.now()
	if ev.isSync {
		present := map[string]bool{}
		for i := range ev.sync {
			f.observe(&ev.sync[i], now)
			present[key(&ev.sync[i])] = true
		}
		for k := range f.views {
			if !present[k] {
				f.remove(k)
			}
		}
		return
	}
	if ev.pod != nil {
		f.observePod(ev.pod, ev.deleted)
		return
	}
	if ev.deleted {
		f.remove(key(ev.task))
		return
	}
	f.observe(ev.task, now)
}

// observePod keeps the pod under its task (shown once the task is, whichever came first).
func (f *follower) observePod(p *corev1.Pod, deleted bool) {
	k := podTask(p)
	if k == "" {
		return
	}
	if deleted {
		delete(f.pods[k], p.Name)
		return
	}
	if f.pods == nil {
		f.pods = map[string]map[string]*corev1.Pod{}
	}
	if f.pods[k] == nil {
		f.pods[k] = map[string]*corev1.Pod{}
	}
	f.pods[k][p.Name] = p
}

func (f *follower) observe(t *workflowv1alpha1.WorkflowTask, now time.Time) {
	v, ok := f.views[key(t)]
	if !ok {
		v = newTaskView(f.visible)
		f.views[key(t)] = v
	}
	v.observe(t, now)
	f.seen = true
}

func (f *follower) remove(k string) {
	if _, ok := f.views[k]; ok {
		delete(f.views, k)
		delete(f.pods, k)
		f.gone = append(f.gone, k)
	}
}

// key names a task in the view: namespace/name, or "ID <id>" for a stream by ID.
func key(t *workflowv1alpha1.WorkflowTask) string {
	if t.Namespace == "" {
		return t.Name
	}
	return t.Namespace + "/" + t.Name
}

func (f *follower) sorted() []*taskView {
	keys := make([]string, 0, len(f.views))
	for k := range f.views {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*taskView, len(keys))
	for i, k := range keys {
		out[i] = f.views[k]
	}
	return out
}

func (f *follower) rows() []Row {
	var rows []Row
	now := f.now()
	for _, v := range f.sorted() {
		rows = append(rows, v.rows(now)...)
		if !v.visibleDone() {
			rows = append(rows, podRows(key(v.task), f.pods[key(v.task)])...)
		}
	}
	return rows
}

// done: every followed task finished (or the one followed is gone), and with what code:
// any Error is 1, else any Canceled 2, else 0. A stream (no phase) is done when every entry
// with a known total reached it.
func (f *follower) done() (int, bool) {
	if f.single && len(f.gone) > 0 {
		return ExitFailed, true
	}
	if !f.seen || len(f.views) == 0 {
		return 0, false
	}
	code := ExitCompleted
	for _, v := range f.views {
		if !v.visibleDone() {
			return 0, false
		}
		switch v.task.Status.Phase {
		case workflowv1alpha1.TaskPhaseError:
			code = ExitFailed
		case workflowv1alpha1.TaskPhaseCanceled:
			if code != ExitFailed {
				code = ExitCanceled
			}
		}
	}
	return code, true
}

// lines end the watch: the phase of each task, and which went away.
func (f *follower) lines() []string {
	var out []string
	for _, v := range f.sorted() {
		if v.phaseVisible {
			out = append(out, finalLine(v.task))
		} else if v.visibleDone() {
			out = append(out, key(v.task)+": every progress entry reached its total")
		}
	}
	for _, k := range f.gone {
		out = append(out, k+": deleted")
	}
	return out
}
