package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apilabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// jobObservation is what the controller learned about a task's Job in this reconcile: the
// input to computeStatus besides the task and the clock.
type jobObservation struct {
	// job is the task's Job, nil when there is none.
	job *batchv1.Job
	// created is true when this reconcile created the Job.
	created bool
	// missing is true when the Job was created earlier but is gone (deleted by someone else).
	missing bool
	// invalid holds the API server's reason for refusing the Job; the task's template is
	// immutable, so this cannot heal.
	invalid string
	// conflict holds why an existing object with the Job's name is not the task's Job.
	conflict string
	// failure is how the failed Job's last failed container ended ("container worker exited
	// with code 3 (Error)"), read once when the Job failed.
	failure string
}

// jobName is the name of a task's Job: the task's own name, so a repeated create can only ever
// meet the same Job (AlreadyExists), never start a second one.
func jobName(task *workflowv1alpha1.WorkflowTask) string { return task.Name }

// labelsFor are the labels of everything the controller creates for a task.
func labelsFor(task *workflowv1alpha1.WorkflowTask) map[string]string {
	return map[string]string{
		workflowv1alpha1.LabelTaskName:  task.Name,
		workflowv1alpha1.LabelTaskID:    workflowv1alpha1.TaskIDFromUID(task.UID),
		workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue,
	}
}

// reconcileJob makes the task's Job match the task: created once, suspended or resumed with the
// task, deleted when the task is canceled. With mayCreate false (the runner identity is not in
// place) it only looks: a Job must never run as an identity the operator does not control.
func (r *WorkflowTaskReconciler) reconcileJob(ctx context.Context, task *workflowv1alpha1.WorkflowTask, rec taskRecord, mayCreate bool) (jobObservation, error) {
	job, err := r.getJob(ctx, task, rec)
	if err != nil {
		return jobObservation{}, err
	}
	if isCancelRequested(task) {
		if job == nil || !metav1.IsControlledBy(job, task) {
			return jobObservation{}, nil // nothing of the task's runs; someone else's Job is not ours to delete
		}
		return jobObservation{}, r.deleteJob(ctx, job)
	}
	if job != nil && !metav1.IsControlledBy(job, task) {
		return jobConflict(job, task)
	}
	switch {
	case job == nil && rec.JobCreated:
		return jobObservation{missing: true}, nil
	case job == nil && mayCreate:
		return r.createJob(ctx, task)
	case job == nil:
		return jobObservation{}, nil
	}
	obs := jobObservation{job: job}
	if jobFailed(job) && !rec.finished() {
		obs.failure = r.podFailure(ctx, task, job)
	}
	return obs, r.syncSuspend(ctx, task, job)
}

// getJob returns the task's Job, or nil. The cache may lag behind a Job this controller just
// created, so a miss for a task whose Job should exist is confirmed with a live read before
// anyone concludes it was deleted.
func (r *WorkflowTaskReconciler) getJob(ctx context.Context, task *workflowv1alpha1.WorkflowTask, rec taskRecord) (*batchv1.Job, error) {
	key := client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}
	job := &batchv1.Job{}
	err := r.Get(ctx, key, job)
	if apierrors.IsNotFound(err) && rec.JobCreated {
		err = r.APIReader.Get(ctx, key, job)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("getting Job %s: %w", key, err)
	}
	return job, nil
}

// jobConflict is what a Job of the task's name that the task does not control means: an earlier
// task of the same name's Job, still being garbage-collected, is waited for (an error, retried);
// anyone else's is a conflict the task cannot get past.
func jobConflict(job *batchv1.Job, task *workflowv1alpha1.WorkflowTask) (jobObservation, error) {
	var earlier *earlierTaskError
	if err := notOurs(job, task, "Job"); errors.As(err, &earlier) {
		return jobObservation{}, err
	}
	return jobObservation{conflict: fmt.Sprintf("a Job named %q exists and does not belong to this task", job.Name)}, nil
}

// podsGone tells whether none of the Job's pods can still be running: the Job controller adds
// Complete or Failed only once every pod has terminated (SuccessCriteriaMet and FailureTarget
// come first, while pods may still be stopping).
func podsGone(job *batchv1.Job) bool {
	return job.DeletionTimestamp.IsZero() && (isJobCondition(job, batchv1.JobComplete) || isJobCondition(job, batchv1.JobFailed))
}

func isCancelRequested(task *workflowv1alpha1.WorkflowTask) bool {
	return ptr.Deref(task.Spec.Cancel, false)
}

func (r *WorkflowTaskReconciler) createJob(ctx context.Context, task *workflowv1alpha1.WorkflowTask) (jobObservation, error) {
	push, err := r.Pods.pushTarget(ctx)
	if err != nil {
		return jobObservation{}, err
	}
	job, err := newJob(task, r.Scheme, r.Pods, push)
	if err != nil {
		return jobObservation{}, err
	}
	err = r.Create(ctx, job)
	switch {
	case apierrors.IsInvalid(err):
		return jobObservation{invalid: err.Error()}, nil
	case apierrors.IsAlreadyExists(err):
		// Not in our (label-filtered) cache yet, or not ours: read it to tell which.
		existing := &batchv1.Job{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), existing); err != nil {
			return jobObservation{}, fmt.Errorf("getting existing Job %s: %w", job.Name, err)
		}
		if !metav1.IsControlledBy(existing, task) {
			return jobConflict(existing, task)
		}
		return jobObservation{job: existing}, nil
	case err != nil:
		return jobObservation{}, fmt.Errorf("creating Job %s: %w", job.Name, err)
	}
	return jobObservation{job: job, created: true}, nil
}

// syncSuspend passes the task's suspend to its Job.
func (r *WorkflowTaskReconciler) syncSuspend(ctx context.Context, task *workflowv1alpha1.WorkflowTask, job *batchv1.Job) error {
	want := ptr.Deref(task.Spec.Suspend, false)
	if ptr.Deref(job.Spec.Suspend, false) == want {
		return nil
	}
	patch := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr.To(want)
	if err := r.Patch(ctx, job, patch); err != nil {
		return fmt.Errorf("setting suspend=%t on Job %s: %w", want, job.Name, err)
	}
	return nil
}

// deleteJob deletes a canceled task's Job and, through garbage collection, its pods. Deletion
// is in the foreground: the Job stays (being deleted) until its pods are gone, so their last
// progress writes still land and the runner's access is revoked only after them.
func (r *WorkflowTaskReconciler) deleteJob(ctx context.Context, job *batchv1.Job) error {
	if job == nil || !job.DeletionTimestamp.IsZero() {
		return nil
	}
	err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationForeground),
		client.Preconditions{UID: &job.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Job %s: %w", job.Name, err)
	}
	return nil
}

// PodDefaults are what the controller gives every task's pods beyond the task's own template.
type PodDefaults struct {
	// ProgressImage runs the progress-file sidecar of tasks that do not name an image.
	ProgressImage string
	// ProgressInterval, when set, is $WORKFLOWTASK_PROGRESS_INTERVAL in every container.
	ProgressInterval time.Duration
	// Ingest, when set, has the pods push their progress to the operator (ingest mode); nil:
	// they write the task's status themselves, as the runner's RoleBinding allows (direct mode).
	Ingest *IngestDefaults
}

// env is the environment the defaults add to every container.
func (d PodDefaults) env() []corev1.EnvVar {
	if d.ProgressInterval <= 0 {
		return nil
	}
	return []corev1.EnvVar{{Name: workflowv1alpha1.EnvProgressInterval, Value: d.ProgressInterval.String()}}
}

// newJob builds the task's Job: the task's pod template, run as the task's runner
// ServiceAccount, with the task's identity (and the fleet's progress interval) in every
// container's environment, the progress-file sidecar when the task asks for it, and, in ingest
// mode (push not nil), what the pods push with: the push URL and CA bundle in every
// container's environment and the projected token in every container, without a token for
// kube-apiserver.
func newJob(task *workflowv1alpha1.WorkflowTask, scheme *runtime.Scheme, defaults PodDefaults, push *pushTarget) (*batchv1.Job, error) {
	labels := labelsFor(task)
	template := *task.Spec.Template.DeepCopy()
	template.Labels = apilabels.Merge(template.Labels, labels)
	template.Spec.ServiceAccountName = runnerName(task)
	if template.Spec.RestartPolicy == "" {
		template.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	env := append(append(taskEnv(task), defaults.env()...), push.env(task)...)
	for i := range template.Spec.InitContainers {
		template.Spec.InitContainers[i].Env = withEnv(template.Spec.InitContainers[i].Env, env)
	}
	for i := range template.Spec.Containers {
		template.Spec.Containers[i].Env = withEnv(template.Spec.Containers[i].Env, env)
	}
	addProgressSidecar(task, &template.Spec, defaults.ProgressImage, env)
	push.addToken(&template.Spec)

	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: jobName(task), Namespace: task.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          task.Spec.BackoffLimit,
			ActiveDeadlineSeconds: task.Spec.ActiveDeadlineSeconds,
			Suspend:               ptr.To(ptr.Deref(task.Spec.Suspend, false)),
			Template:              template,
		},
	}
	if err := controllerutil.SetControllerReference(task, job, scheme); err != nil {
		return nil, fmt.Errorf("setting the owner of Job %s: %w", job.Name, err)
	}
	return job, nil
}

// taskEnv is the task's identity as environment variables, read through the downward API from
// the pod's own labels and metadata, and its UID (the reporters' write precondition).
func taskEnv(task *workflowv1alpha1.WorkflowTask) []corev1.EnvVar {
	fromField := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	return []corev1.EnvVar{
		{Name: workflowv1alpha1.EnvTaskName, ValueFrom: fromField("metadata.labels['" + workflowv1alpha1.LabelTaskName + "']")},
		{Name: workflowv1alpha1.EnvTaskID, ValueFrom: fromField("metadata.labels['" + workflowv1alpha1.LabelTaskID + "']")},
		{Name: workflowv1alpha1.EnvTaskUID, Value: string(task.UID)},
		{Name: workflowv1alpha1.EnvTaskNamespace, ValueFrom: fromField("metadata.namespace")},
		{Name: workflowv1alpha1.EnvPodName, ValueFrom: fromField("metadata.name")},
	}
}

// withEnv adds the variables a container does not define itself; the container's own
// definitions win.
func withEnv(have, add []corev1.EnvVar) []corev1.EnvVar {
	defined := make(map[string]bool, len(have))
	for _, e := range have {
		defined[e.Name] = true
	}
	out := append([]corev1.EnvVar(nil), have...)
	for _, e := range add {
		if !defined[e.Name] {
			out = append(out, e)
		}
	}
	return out
}
