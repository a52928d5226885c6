package v1alpha1

// Condition types of a WorkflowTask. Ready, Reconciling and Stalled follow kstatus, so generic
// tools (kubectl wait, Flux, Argo CD, cli-utils) read a task's health without knowing its kind.
const (
	// ConditionReady is True once the task completed successfully.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the task is still on its way (Queued, Processing,
	// Suspending) and False once it finished.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the task cannot move on without help: its Job failed or
	// vanished, or it is Processing but no progress entry changed within progressDeadlineSeconds.
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
