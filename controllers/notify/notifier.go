package notify

import (
	"context"
	"fmt"
	"math"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// EventNotificationDropped is the reason of the Warning Event on a task whose announcement a
// sink refused (a 4xx other than 408 and 429): it is not sent again.
const EventNotificationDropped = "NotificationDropped"

// Notifier delivers the announcements in tasks' records to the configured sinks. It reads tasks
// from the manager's cache and runs on the leader only; each sink has its own queue of tasks and
// workers, so a sink that is down, slow, failing or redirecting delays only itself. A task is
// handled by one worker of a sink at a time, so its announcements arrive in order.
type Notifier struct {
	informers cache.Informers
	outbox    func(*workflowv1alpha1.WorkflowTask) Outbox
	recorder  events.EventRecorder
	clock     clock.PassiveClock
	// onDelivered is told when every sink took the last announcement of a finished task, so
	// the controller writes that to the record once (the Seq up to which it was sent).
	onDelivered func(context.Context, types.NamespacedName)
	sinks       []*sink

	mu    sync.Mutex
	tasks map[types.UID]*taskState
}

// taskState is what the Notifier holds of one task: the latest object seen and the
// announcements to deliver.
type taskState struct {
	task    *workflowv1alpha1.WorkflowTask // from the cache: read only
	raw     string                         // its record as last read
	pending []Announcement
	sent    int64 // Outbox.Sent as the record last said
	// start and completion are the task's times as its record says.
	start, completion *metav1.Time
	deleted           bool
}

// New returns a Notifier for the sinks of cfg. outbox reads a task's announcements from its
// record; onDelivered (may be nil) is called once a finished task's announcements all arrived.
func New(cfg Config, informers cache.Informers, outbox func(*workflowv1alpha1.WorkflowTask) Outbox,
	recorder events.EventRecorder, onDelivered func(context.Context, types.NamespacedName)) (*Notifier, error) {
	n := &Notifier{informers: informers, outbox: outbox, recorder: recorder, clock: clock.RealClock{},
		onDelivered: onDelivered, tasks: map[types.UID]*taskState{}}
	for _, sc := range cfg.Sinks {
		s, err := newSink(sc.withDefaults())
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		n.sinks = append(n.sinks, s)
	}
	return n, nil
}

var _ manager.LeaderElectionRunnable = (*Notifier)(nil)

// NeedLeaderElection reports true: only the leader delivers (its controller writes the records).
func (n *Notifier) NeedLeaderElection() bool { return true }

// Start watches tasks and runs every sink's workers until ctx ends.
func (n *Notifier) Start(ctx context.Context) error {
	inf, err := n.informers.GetInformer(ctx, &workflowv1alpha1.WorkflowTask{})
	if err != nil {
		return fmt.Errorf("watching tasks for notifications: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.observe(obj) },
		UpdateFunc: func(_, obj any) { n.observe(obj) },
		DeleteFunc: n.observeDeleted,
	})
	if err != nil {
		return fmt.Errorf("watching tasks for notifications: %w", err)
	}
	defer func() { _ = inf.RemoveEventHandler(reg) }()
	var wg sync.WaitGroup
	for _, s := range n.sinks {
		for range s.cfg.Workers {
			wg.Go(func() {
				for n.deliverNext(ctx, s) {
				}
			})
		}
	}
	<-ctx.Done()
	for _, s := range n.sinks {
		s.queue.ShutDown()
	}
	wg.Wait()
	return nil
}

// Wants reports whether any sink takes the task's announcements: the controller keeps an
// outbox only for those.
func (n *Notifier) Wants(task *workflowv1alpha1.WorkflowTask) bool {
	if n == nil {
		return false
	}
	for _, s := range n.sinks {
		if s.cfg.wants(task) {
			return true
		}
	}
	return false
}

// Delivered is the Seq up to which every sink of the task took its announcements.
func (n *Notifier) Delivered(task *workflowv1alpha1.WorkflowTask) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	least := int64(math.MaxInt64)
	for _, s := range n.sinks {
		if s.cfg.wants(task) {
			least = min(least, s.acked[task.UID])
		}
	}
	return least
}

func (n *Notifier) observe(obj any) {
	task, ok := obj.(*workflowv1alpha1.WorkflowTask)
	if !ok || !n.Wants(task) {
		return
	}
	raw := task.Annotations[workflowv1alpha1.AnnotationRecord]
	n.mu.Lock()
	if st := n.tasks[task.UID]; st != nil && st.raw == raw {
		st.task = task // progress changed, not the record: nothing new to deliver
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	ob := n.outbox(task)
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.tasks[task.UID]
	if st == nil {
		st = &taskState{}
		n.tasks[task.UID] = st
	}
	st.task, st.raw, st.pending, st.sent, st.start, st.completion = task, raw, ob.Pending, ob.Sent, ob.StartTime, ob.CompletionTime
	n.enqueueLocked(task, ob.Sent, ob.Last())
}

func (n *Notifier) observeDeleted(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	task, ok := obj.(*workflowv1alpha1.WorkflowTask)
	if !ok || !n.Wants(task) {
		return
	}
	ob := n.outbox(task)
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.tasks[task.UID]
	if st == nil {
		st = &taskState{task: task, pending: ob.Pending, sent: ob.Sent, start: ob.StartTime, completion: ob.CompletionTime}
		n.tasks[task.UID] = st
	}
	last := max(ob.Last(), lastSeq(st.pending))
	st.deleted = true
	st.pending = append(st.pending, Announcement{Seq: last + 1, What: Deleted, Time: nowMicro(n.clock),
		Phase: string(task.Status.Phase)})
	n.enqueueLocked(task, st.sent, last+1)
}

// enqueueLocked queues the task on every sink of its namespace that has not taken its
// announcements up to last.
func (n *Notifier) enqueueLocked(task *workflowv1alpha1.WorkflowTask, sent, last int64) {
	for _, s := range n.sinks {
		if !s.cfg.wants(task) {
			continue
		}
		if s.acked[task.UID] < sent {
			s.acked[task.UID] = sent
		}
		if last > s.acked[task.UID] {
			s.queue.Add(task.UID)
		}
	}
}

// deliverNext sends the announcements of one queued task to sink s, in order, until all are
// delivered or one attempt fails (the task is queued again after the sink's backoff). It
// reports false once the queue is shut down.
func (n *Notifier) deliverNext(ctx context.Context, s *sink) bool {
	uid, shutdown := s.queue.Get()
	if shutdown {
		return false
	}
	defer s.queue.Done(uid)
	for {
		task, times, next, ok := n.next(s, uid)
		if !ok {
			n.settle(ctx, uid)
			return true
		}
		if !s.waitReady(ctx) {
			return true
		}
		err := s.send(ctx, task, times, next)
		switch {
		case err == nil:
			s.succeeded()
			delivered.WithLabelValues(s.cfg.Name).Inc()
			deliverySeconds.WithLabelValues(s.cfg.Name).Observe(n.clock.Since(next.Time.Time).Seconds())
			n.ack(s, uid, next.Seq)
		case isRejected(err):
			s.succeeded() // the sink is up; it refuses this event
			dropped.WithLabelValues(s.cfg.Name, "rejected").Inc()
			n.recorder.Eventf(task, nil, corev1.EventTypeWarning, EventNotificationDropped, "Notify",
				"Sink %s refused %s (%s): %v; it is not sent again", s.cfg.Name, next.Type(), next.ID(task.UID), err)
			n.ack(s, uid, next.Seq)
		default:
			failedAttempts.WithLabelValues(s.cfg.Name, failureReason(err)).Inc()
			log.FromContext(ctx).V(1).Info("Notification not delivered; retrying", "sink", s.cfg.Name,
				"id", next.ID(task.UID), "error", err.Error())
			s.queue.AddAfter(uid, s.failed())
			return true
		}
	}
}

// next is the first announcement of the task that sink s has not taken.
func (n *Notifier) next(s *sink, uid types.UID) (*workflowv1alpha1.WorkflowTask, Outbox, Announcement, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.tasks[uid]
	if st == nil {
		return nil, Outbox{}, Announcement{}, false
	}
	for _, a := range st.pending {
		if a.Seq > s.acked[uid] {
			return st.task, Outbox{StartTime: st.start, CompletionTime: st.completion}, a, true
		}
	}
	return nil, Outbox{}, Announcement{}, false
}

func (n *Notifier) ack(s *sink, uid types.UID, seq int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s.acked[uid] < seq {
		s.acked[uid] = seq
	}
}

// settle, once every sink of a task took its last announcement: forgets a deleted task, and
// tells the controller about a finished one whose record does not say so yet.
func (n *Notifier) settle(ctx context.Context, uid types.UID) {
	n.mu.Lock()
	st := n.tasks[uid]
	if st == nil {
		n.mu.Unlock()
		return
	}
	last := max(lastSeq(st.pending), st.sent)
	for _, s := range n.sinks {
		if s.cfg.wants(st.task) && s.acked[uid] < last {
			n.mu.Unlock()
			return
		}
	}
	key := types.NamespacedName{Namespace: st.task.Namespace, Name: st.task.Name}
	tell := !st.deleted && last > st.sent && len(st.pending) > 0 && final(st.pending[len(st.pending)-1])
	if st.deleted {
		delete(n.tasks, uid)
		for _, s := range n.sinks {
			delete(s.acked, uid)
		}
	}
	n.mu.Unlock()
	if tell && n.onDelivered != nil {
		n.onDelivered(ctx, key)
	}
}

func lastSeq(as []Announcement) int64 {
	if len(as) == 0 {
		return 0
	}
	return as[len(as)-1].Seq
}

func nowMicro(c clock.PassiveClock) metav1.MicroTime { return metav1.MicroTime{Time: c.Now()} }

// final reports whether nothing is said of a task after a (it finished).
func final(a Announcement) bool {
	return a.What == Succeeded || a.What == Failed || a.What == Canceled || a.What == Deleted
}
