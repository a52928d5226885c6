package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TaskType names the kind of work a task does. The well-known values are Cloudreve's task types;
// any other lower-case snake_case name is accepted as a custom type.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`
type TaskType string

// Well-known task types (Cloudreve v4's queue task types).
const (
	TaskTypeUpload         TaskType = "upload"
	TaskTypeImport         TaskType = "import"
	TaskTypeCreateArchive  TaskType = "create_archive"
	TaskTypeExtractArchive TaskType = "extract_archive"
	TaskTypeRelocate       TaskType = "relocate"
	TaskTypeRemoteDownload TaskType = "remote_download"
	TaskTypeMediaMeta      TaskType = "media_meta"
)

// TaskPhase is a one-word summary of where a task is, using Cloudreve's task statuses. It is for
// display; programs should read the conditions.
// +kubebuilder:validation:Enum=Queued;Processing;Suspending;Completed;Error;Canceled
type TaskPhase string

// The phases of a task.
const (
	// TaskPhaseQueued: the Job exists but none of its pods is running yet.
	TaskPhaseQueued TaskPhase = "Queued"
	// TaskPhaseProcessing: at least one pod of the Job is running.
	TaskPhaseProcessing TaskPhase = "Processing"
	// TaskPhaseSuspending: the task or its Job is suspended.
	TaskPhaseSuspending TaskPhase = "Suspending"
	// TaskPhaseCompleted: the Job succeeded. Terminal.
	TaskPhaseCompleted TaskPhase = "Completed"
	// TaskPhaseError: the Job failed, hit its deadline, or vanished while running. Terminal.
	TaskPhaseError TaskPhase = "Error"
	// TaskPhaseCanceled: the task was canceled; its Job was deleted and its record kept. Terminal.
	TaskPhaseCanceled TaskPhase = "Canceled"
)

// IsFinished reports whether the phase is terminal (Completed, Error or Canceled).
func (p TaskPhase) IsFinished() bool {
	return p == TaskPhaseCompleted || p == TaskPhaseError || p == TaskPhaseCanceled
}

// WorkflowTaskSpec is the desired state of a WorkflowTask. The fields that shape the Job (type,
// owner, template, backoffLimit, activeDeadlineSeconds) are immutable: the Job is created from them
// as soon as the task exists, so a later change could not take effect and is refused instead.
// +kubebuilder:validation:XValidation:rule="has(self.backoffLimit) == has(oldSelf.backoffLimit) && (!has(self.backoffLimit) || self.backoffLimit == oldSelf.backoffLimit)",message="backoffLimit is immutable",fieldPath=".backoffLimit"
// +kubebuilder:validation:XValidation:rule="has(self.activeDeadlineSeconds) == has(oldSelf.activeDeadlineSeconds) && (!has(self.activeDeadlineSeconds) || self.activeDeadlineSeconds == oldSelf.activeDeadlineSeconds)",message="activeDeadlineSeconds is immutable",fieldPath=".activeDeadlineSeconds"
// +kubebuilder:validation:XValidation:rule="has(self.progressSidecar) == has(oldSelf.progressSidecar) && (!has(self.progressSidecar) || self.progressSidecar == oldSelf.progressSidecar)",message="progressSidecar is immutable",fieldPath=".progressSidecar"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",message="cancel cannot be undone: a canceled task stays canceled",fieldPath=".cancel"
type WorkflowTaskSpec struct {
	// type is the kind of work the task does. The well-known values are Cloudreve's task types
	// (upload, import, create_archive, extract_archive, relocate, remote_download, media_meta);
	// any other lower-case snake_case name of at most 63 characters is a custom type.
	// Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="type is immutable"
	Type TaskType `json:"type"`

	// owner is the username of the user the task belongs to, as the cluster authenticates them.
	// The progress endpoint shows the task to this user. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="owner is immutable"
	Owner string `json:"owner"`

	// template is the pod template of the task's Job. The controller adds the task's identity
	// (environment variables) and the runner ServiceAccount to it. Immutable: the admission
	// policy template.workflow.taskops.dev refuses a change (not a CEL rule of this schema,
	// which would compare the whole template on every progress write; see
	// config/admission/template_policy.yaml).
	// +required
	Template corev1.PodTemplateSpec `json:"template"`

	// backoffLimit is the number of retries before the task's Job is marked failed; passed to the
	// Job as is. Defaults to the Job's default (6). Immutable.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// activeDeadlineSeconds bounds, in seconds, how long the task's Job may run; once reached the
	// task ends in Error. Passed to the Job as is. Immutable.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=31536000
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// ttlSecondsAfterFinished, when set, deletes the task (with its Job and runner identity) this
	// many seconds after it finished (Completed, Error or Canceled). Unset keeps it forever.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// progressDeadlineSeconds is how long a Processing task may go without any progress entry
	// changing before it is reported Stalled. It does not stop the task.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// suspend pauses the task: its Job is suspended (running pods are stopped) until suspend is
	// set back to false. Passed to the Job.
	// +optional
	Suspend *bool `json:"suspend,omitempty"`

	// progressSidecar, when set, runs the progress CLI in file mode as a native sidecar (an init
	// container with restartPolicy Always) beside the task's containers, sharing an emptyDir with
	// them. Any program then reports progress by appending lines such as "upload_count 25/34" to
	// the file named by $WORKFLOWTASK_PROGRESS_FILE. Immutable.
	// +optional
	ProgressSidecar *ProgressSidecar `json:"progressSidecar,omitempty"`

	// cancel, once true, cancels the task: its Job and pods are deleted, the task is kept with its
	// last progress and phase Canceled. It cannot be set back to false.
	// +optional
	Cancel *bool `json:"cancel,omitempty"`
}

// ProgressSidecar configures the progress-file sidecar.
type ProgressSidecar struct {
	// image is the sidecar's image; it must contain /workflowtask-progress. Defaults to the image
	// the operator is configured with (its --progress-image flag), which is the operator's own.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`
}

// ProgressEntry is the progress of one kind of work within a task, keyed by its type.
type ProgressEntry struct {
	// type names the progress, e.g. upload, upload_count, upload_single_0, imported, indexed,
	// archive_size, extract_count, download, relocate: lower-case snake_case, at most 63 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`
	Type string `json:"type"`

	// current is the amount processed so far: bytes or items, depending on the type.
	// +required
	// +kubebuilder:validation:Minimum=0
	Current int64 `json:"current"`

	// total is the amount to process, in the unit of current; 0 when not known (yet).
	// +required
	// +kubebuilder:validation:Minimum=0
	Total int64 `json:"total"`

	// identifier tells apart entries of the same kind, e.g. the destination of one upload thread.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Identifier string `json:"identifier,omitempty"`

	// updateTime is when the writer last changed this entry. Stall detection reads it. Writers
	// that leave it out (a plain `kubectl patch`, a shell script) are timed by the controller
	// instead: such an entry counts as changed when the controller first sees its new value
	// (after an operator restart, from the restart). A time more than a minute ahead of the
	// controller's clock is not believed and is treated the same way.
	// +optional
	UpdateTime *metav1.MicroTime `json:"updateTime,omitempty"`
}

// WorkflowTaskStatus is the observed state of a WorkflowTask. The controller writes everything but
// progress; the task's job pods write progress, each writer its own entries (server-side apply).
type WorkflowTaskStatus struct {
	// id is the task's short ID, as used in GET /workflow/progress/{id}. It is derived from
	// metadata.uid, so it cannot be chosen or moved by anyone who can write the status.
	// +optional
	// +kubebuilder:validation:MinLength=10
	// +kubebuilder:validation:MaxLength=10
	// +kubebuilder:validation:Pattern=`^[0-9A-Za-z]+$`
	ID string `json:"id,omitempty"`

	// phase is a one-word summary (Cloudreve's task status) for display. Read conditions instead.
	// +optional
	Phase TaskPhase `json:"phase,omitempty"`

	// progressSummary is the main progress entry in short form ("45%", or "25/34" files), shown
	// in the Progress column.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ProgressSummary string `json:"progressSummary,omitempty"`

	// observedGeneration is the metadata.generation the controller last acted on; -1 until it
	// first has.
	// +optional
	// +kubebuilder:validation:Minimum=-1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are the task's conditions: Ready, Reconciling and Stalled (kstatus), and
	// Suspended, Canceled and Failed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// startTime is when the task's Job was first seen running.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the task finished (Completed, Error or Canceled).
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// progress is the task's progress, one entry per type. Job pods write it through server-side
	// apply on the status subresource, each writer owning its own entries.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=128
	Progress []ProgressEntry `json:"progress,omitempty"`
}

// WorkflowTask is one unit of file-processing work (upload, import, archive, extract, relocate,
// remote download, …) run as a Job, whose pods report progress into the task's status.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wft,categories=workflow
// +kubebuilder:printcolumn:name="ID",type=string,JSONPath=`.status.id`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owner`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progressSummary`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it names the task's Job"
type WorkflowTask struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the task as asked for.
	// +required
	Spec WorkflowTaskSpec `json:"spec"`

	// status is the task as observed, including its progress. Until the controller has looked
	// at the task it reads {observedGeneration: -1}, so that kstatus (Flux, kubectl) and Argo CD
	// see a task nobody has reconciled yet as in progress, not as current.
	// +optional
	// +kubebuilder:default:={"observedGeneration":-1}
	Status WorkflowTaskStatus `json:"status,omitempty"`
}

// WorkflowTaskList is a list of WorkflowTasks.
// +kubebuilder:object:root=true
type WorkflowTaskList struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the tasks.
	Items []WorkflowTask `json:"items"`
}
