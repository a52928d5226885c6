// Package controllers reconciles WorkflowTasks into Jobs run as a per-task runner identity, and
// keeps each task's phase and conditions true.
package controllers

import (
	"context"
	"errors"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// minRequeueAfter floors a computed requeue delay: a deadline that has just passed is looked at
// again shortly instead of never (a zero RequeueAfter means no requeue).
const minRequeueAfter = 100 * time.Millisecond

// WorkflowTaskReconciler turns a WorkflowTask into a Job and a runner identity, and keeps the
// task's status (phase, conditions, times, ID) true.
type WorkflowTaskReconciler struct {
	client.Client
	// APIReader reads past the cache, to confirm that a Job is really gone.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// Pods are the defaults the controller gives every task's pods.
	Pods PodDefaults
	// Deliveries, when set, is the notifier the task's announcements are kept for until it
	// delivered them (controllers/notify); nil: announced as Events only.
	Deliveries Deliveries
	// Delivered wakes a task whose announcements the notifier delivered (nil: never).
	Delivered <-chan ctrlevent.TypedGenericEvent[*workflowv1alpha1.WorkflowTask]

	// progressClock times progress entries that carry no believable updateTime.
	progressClock *progressClock
	// summaries paces writes that change only progressSummary.
	summaries *summaryPacer
}

var _ reconcile.Reconciler = (*WorkflowTaskReconciler)(nil)

// NewWorkflowTaskReconciler wires a reconciler to the manager's client, cache-bypassing reader,
// scheme and event recorder, with the real clock and the pod defaults of opts.
func NewWorkflowTaskReconciler(mgr ctrl.Manager, opts Options) *WorkflowTaskReconciler {
	return &WorkflowTaskReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Scheme:        mgr.GetScheme(),
		Recorder:      mgr.GetEventRecorder("workflowtask-controller"),
		Clock:         clock.RealClock{},
		Pods:          PodDefaults{ProgressImage: opts.ProgressImage, ProgressInterval: opts.ProgressInterval},
		progressClock: newProgressClock(),
		summaries:     newSummaryPacer(),
	}
}

// +kubebuilder:rbac:groups=workflow.taskops.dev,resources=workflowtasks,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=workflow.taskops.dev,resources=workflowtasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=workflow.taskops.dev,resources=workflowtasks/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=list

// Reconcile brings one task one step closer to what it asks for, counting failures by reason
// (workflowtask_reconcile_errors_total).
func (r *WorkflowTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	if err != nil {
		ReconcileErrors.WithLabelValues(errorReason(err)).Inc()
	}
	return res, err
}

// reconcile: get → check the record → expire → ensure owned objects → compute status → record,
// one status write, events. The status it writes comes from the controller's own record and
// what it observes now, never from the status it reads back; it is written on the error path
// too. The record itself is checked against the Job first (trustRecord): rebuilt when lost, a
// verdict the running Job contradicts dropped.
func (r *WorkflowTaskReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	task := &workflowv1alpha1.WorkflowTask{}
	if err := r.Get(ctx, req.NamespacedName, task); err != nil {
		r.progressClock.forget(req.NamespacedName)
		r.summaries.forget(req.NamespacedName)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // garbage collection removes the Job and the runner identity
	}
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("workflowtask", klog.KObj(task)))
	now := r.Clock.Now()
	stored := readRecord(task)
	job, err := r.cachedJob(ctx, task)
	if err != nil {
		return ctrl.Result{}, err
	}
	rec, recordEvent := trustRecord(task, stored, job, metav1.NewTime(now).Rfc3339Copy())

	if deleted, err := r.deleteIfExpired(ctx, task, rec, now); deleted || err != nil {
		return ctrl.Result{}, err
	}
	obs, reconcileErr := r.reconcileOwned(ctx, task, rec)

	in := statusInputs{record: rec, obs: obs, err: reconcileErr, now: now}
	if !rec.finished() {
		in.seen = r.progressClock.observe(task, now)
	}
	status, newRec := computeStatus(task, in)
	if newRec.finished() {
		r.progressClock.forget(req.NamespacedName)
		r.summaries.forget(req.NamespacedName)
	}
	old := task.Status.DeepCopy()
	status, summaryWait := r.summaries.pace(req.NamespacedName, old, &status, now)
	newRec, announced := r.announceInto(task, stored, newRec, &status, now)
	if err := r.writeRecordIfChanged(ctx, task, stored, newRec); err != nil {
		return ctrl.Result{}, errors.Join(reconcileErr, err)
	}
	observeFinished(task, rec, newRec)
	if err := r.updateStatusIfChanged(ctx, task, status); err != nil {
		return ctrl.Result{}, errors.Join(reconcileErr, err)
	}
	events := append(statusEvents(old, &status, obs), announced...)
	if recordEvent != nil {
		events = append([]event{*recordEvent}, events...)
	}
	for _, e := range events {
		r.Recorder.Eventf(task, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
	if reconcileErr != nil {
		return ctrl.Result{}, reconcileErr
	}
	return ctrl.Result{RequeueAfter: sooner(requeueAfter(task, &status, newRec, in.seen, now), summaryWait)}, nil
}

// sooner is the earlier of two requeue delays, 0 meaning none.
func sooner(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// reconcileOwned brings the objects a task owns in line and says what it saw of the Job. A
// running task gets its runner identity, then its Job (created only when the identity is the
// task's own); a finished one only loses its runner's access once its pods are gone.
func (r *WorkflowTaskReconciler) reconcileOwned(ctx context.Context, task *workflowv1alpha1.WorkflowTask, rec taskRecord) (jobObservation, error) {
	if rec.finished() {
		return jobObservation{}, r.revokeRunnerAccess(ctx, task, rec)
	}
	runnerErr := r.reconcileRunnerIdentity(ctx, task)
	obs, jobErr := r.reconcileJob(ctx, task, rec, runnerErr == nil)
	return obs, errors.Join(runnerErr, jobErr)
}

// requeueAfter is when the task next needs a look without any watch event: when a Processing
// task would stall, or when a finished one expires. 0 means never.
func requeueAfter(task *workflowv1alpha1.WorkflowTask, status *workflowv1alpha1.WorkflowTaskStatus, rec taskRecord,
	seen map[string]time.Time, now time.Time) time.Duration {
	if d := stallRequeueAfter(task, status, seen, now); d > 0 {
		return d
	}
	return ttlRequeueAfter(task, rec, now)
}

// SetupWithManager registers the controller: tasks, and the Jobs and runner objects they own.
// Changes to a Job's status or to any owned object wake its task.
func (r *WorkflowTaskReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(opts).
		For(&workflowv1alpha1.WorkflowTask{}).
		Owns(&batchv1.Job{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{})
	if r.Delivered != nil {
		b = b.WatchesRawSource(source.Channel(r.Delivered, &handler.TypedEnqueueRequestForObject[*workflowv1alpha1.WorkflowTask]{}))
	}
	return b.Complete(r)
}
