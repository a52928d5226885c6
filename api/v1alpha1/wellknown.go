package v1alpha1

// Labels the controller puts on the objects it creates for a task (Job, pods, runner identity).
const (
	// LabelTaskName holds the name of the task an object belongs to.
	LabelTaskName = "workflow.taskops.dev/task-name"
	// LabelTaskID holds the short ID of the task an object belongs to.
	LabelTaskID = "workflow.taskops.dev/task-id"
	// LabelManagedBy is the standard managed-by label; the controller only watches objects with
	// ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is this operator's value of LabelManagedBy.
	ManagedByValue = "workflowtask-operator"
)

// AnnotationRecord holds, on a task, the controller's own record of what it established: that
// it created the Job, when the task started, and the verdict and time when it finished. It is
// metadata, which the task's pods (allowed to write only the status subresource) cannot reach;
// the controller computes the status from it and never from the status it reads back.
const AnnotationRecord = "workflow.taskops.dev/record"

// AnnotationNotify names, on a task, notification sinks (comma-separated) that the platform
// team offers as opt-in (optIn: true in the operator's sinks): the task's announcements go to
// them too. Its owner sets it; naming a sink that is not offered has no effect.
const AnnotationNotify = "workflow.taskops.dev/notify"

// Environment variables the controller injects into every container of a task's pod, so the
// progress reporter (pkg/progress, cmd/workflowtask-progress) needs no configuration in a pod.
const (
	// EnvTaskName is the name of the task to report progress to.
	EnvTaskName = "WORKFLOWTASK_NAME"
	// EnvTaskNamespace is the namespace of the task.
	EnvTaskNamespace = "WORKFLOWTASK_NAMESPACE"
	// EnvTaskID is the task's short ID.
	EnvTaskID = "WORKFLOWTASK_ID"
	// EnvTaskUID is the task's metadata.uid. Reporters send it with every write as a
	// precondition, so a pod of a deleted task never writes into a new task of the same name.
	EnvTaskUID = "WORKFLOWTASK_UID"
	// EnvPodName is the pod's own name; reporters use it to name their field manager, so the
	// pods of one task never take each other's progress entries.
	EnvPodName = "WORKFLOWTASK_POD_NAME"
	// EnvProgressFile is the progress file a task with spec.progressSidecar appends lines to.
	EnvProgressFile = "WORKFLOWTASK_PROGRESS_FILE"
	// EnvProgressInterval is the shortest time between two progress writes of a reporter (a Go
	// duration, e.g. "1s", "1m"), set in every container when the operator runs with
	// --progress-interval: the cluster's cadence for the whole fleet. Unset, reporters write at
	// most once a second.
	EnvProgressInterval = "WORKFLOWTASK_PROGRESS_INTERVAL"
)

// The progress-file sidecar.
const (
	// ProgressSidecarName is the name of the sidecar container.
	ProgressSidecarName = "workflowtask-progress"
	// ProgressDir is where the shared emptyDir is mounted in every container.
	ProgressDir = "/var/run/workflowtask"
	// ProgressFile is the file the sidecar follows: $WORKFLOWTASK_PROGRESS_FILE.
	ProgressFile = ProgressDir + "/progress"
)
