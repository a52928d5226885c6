package v1alpha1

// Condition types of a WorkflowTask. Ready, Reconciling and Stalled follow kstatus, so generic
// tools (kubectl wait, Flux, Argo CD, cli-utils) read a task's health without knowing its kind.
const (
	// ConditionReady is True once the task completed successfully, False otherwise; a suspended
	// task has none (kstatus: Current, it is where its spec asks it to be) until it resumes.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the task is on its way (Queued, or Processing with
	// progress moving) and False otherwise: suspended, stalled, or finished.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the task will not move on by itself: it failed (Job failed,
	// deleted, or refused), was canceled, or is Processing but no progress entry changed within
	// progressDeadlineSeconds (until one does). Never True together with Reconciling.
	ConditionStalled = "Stalled"
	// ConditionSuspended is True while the task or its Job is suspended.
	ConditionSuspended = "Suspended"
	// ConditionCanceled is True once the task was canceled.
	ConditionCanceled = "Canceled"
	// ConditionFailed is True once the task ended in Error (like a Job's Failed condition).
	ConditionFailed = "Failed"
)

// Reasons used on the conditions above.
const (
	ReasonQueued                   = "Queued"
	ReasonProcessing               = "Processing"
	ReasonSuspended                = "Suspended"
	ReasonResumed                  = "Resumed"
	ReasonCompleted                = "Completed"
	ReasonJobFailed                = "JobFailed"
	ReasonDeadlineExceeded         = "DeadlineExceeded"
	ReasonJobDeleted               = "JobDeleted"
	ReasonCanceled                 = "Canceled"
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	ReasonProgressing              = "Progressing"
	// ReasonRunnerConflict: an object named like the task's runner identity (ServiceAccount,
	// Role or RoleBinding <task>-runner) exists and was not created for this task. The
	// operator never takes such an object over; the task waits (Stalled) until it is removed.
	ReasonRunnerConflict = "RunnerConflict"
	// ReasonReconcileError: a step of the reconcile failed (for example the API server refused
	// a write); it is retried with backoff.
	ReasonReconcileError = "ReconcileError"
)
