package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// IngestLeaderLabel, set to IngestLeaderValue, marks the pod of the replica that leads and so
// takes pushed progress: the ingest Service (config/apiserver, IngestServiceName) selects the
// operator's pods that carry it, as Patroni's primary Service does. The leader sets it on its own
// pod when it starts leading; every replica removes it from its own pod at start-up (a container
// restarted in the same pod keeps the pod's labels) and when it stops.
const (
	IngestLeaderLabel = "workflow.taskops.dev/progress-ingest"
	IngestLeaderValue = "leader"
)

// IngestServiceName is the Service, in the operator's namespace, that pods push their progress
// to (port 443): the operator's pods that carry IngestLeaderLabel.
const IngestServiceName = "workflowtask-progress-ingest"

// The environment, from the downward API (config/manager), that names the operator's own pod.
const (
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
)

// OwnPod is the pod this process runs in, from EnvPodName and EnvPodNamespace; false when
// either is unset (not in a pod, e.g. make run).
func OwnPod() (types.NamespacedName, bool) {
	pod := types.NamespacedName{Namespace: os.Getenv(EnvPodNamespace), Name: os.Getenv(EnvPodName)}
	return pod, pod.Name != "" && pod.Namespace != ""
}

// Waits between failed patches of the label: doubling from the first to the last.
const (
	labelFirstBackoff = 100 * time.Millisecond
	labelLastBackoff  = 5 * time.Second
	// labelStopTimeout bounds the removal when the replica stops.
	labelStopTimeout = 5 * time.Second
)

// LeaderLabel keeps IngestLeaderLabel on one pod, the replica's own, exactly while the replica
// leads. It is two runnables: itself, on every replica, patches the pod to what is wanted (the
// label removed at start-up, set while leading, removed at the end), retrying failed patches
// with backoff; Leader, on the leader only, wants the label while it runs. One goroutine
// patches, so a start-up removal never lands after the leader's label.
type LeaderLabel struct {
	client  client.Client
	pod     types.NamespacedName
	log     logr.Logger
	leading atomic.Bool
	changed chan struct{} // 1-buffered: what is wanted changed
}

var _ manager.LeaderElectionRunnable = (*LeaderLabel)(nil)

// NewLeaderLabel returns the label keeper of pod, patching it with c (pods: patch, in the pod's
// namespace).
func NewLeaderLabel(c client.Client, pod types.NamespacedName, log logr.Logger) *LeaderLabel {
	return &LeaderLabel{client: c, pod: pod, log: log.WithValues("pod", pod), changed: make(chan struct{}, 1)}
}

// NeedLeaderElection is false: every replica clears its own pod's label at start-up.
func (l *LeaderLabel) NeedLeaderElection() bool { return false }

// Start patches the pod's label to what is wanted until ctx ends, then removes it (within
// labelStopTimeout, if the API server can still be reached). Failed patches are logged and
// retried; it returns nil.
func (l *LeaderLabel) Start(ctx context.Context) error {
	var applied *bool // what the pod is known to carry; nil: unknown
	backoff := labelFirstBackoff
loop:
	for {
		var retry <-chan time.Time
		if want := l.leading.Load(); applied == nil || *applied != want {
			switch err := l.patch(ctx, want); {
			case err == nil:
				applied, backoff = &want, labelFirstBackoff
			case ctx.Err() != nil:
				applied = nil // a failed patch may still have been applied: removed below
			default:
				applied = nil
				l.log.Error(err, "Labelling the operator's own pod; retrying", "leader", want, "in", backoff)
				retry = time.After(backoff)
				backoff = min(2*backoff, labelLastBackoff)
			}
		}
		select {
		case <-ctx.Done():
			break loop
		case <-l.changed:
		case <-retry:
		}
	}
	if applied != nil && !*applied {
		return nil
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), labelStopTimeout)
	defer cancel()
	if err := l.patch(stop, false); err != nil {
		l.log.Error(err, "Removing the ingest leader label from the operator's own pod")
	}
	return nil
}

// Leader is the runnable of the leader only: while it runs the label is wanted.
func (l *LeaderLabel) Leader() manager.Runnable { return leaderSide{l} }

// leaderSide wants the label while it runs (on the leader).
type leaderSide struct{ l *LeaderLabel }

// NeedLeaderElection is true: it runs on the leader only.
func (leaderSide) NeedLeaderElection() bool { return true }

// Start wants the label until ctx ends.
func (s leaderSide) Start(ctx context.Context) error {
	s.l.want(true)
	<-ctx.Done()
	s.l.want(false)
	return nil
}

func (l *LeaderLabel) want(leading bool) {
	l.leading.Store(leading)
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// patch sets (leading) or removes the label with a JSON merge patch of the pod's labels.
func (l *LeaderLabel) patch(ctx context.Context, leading bool) error {
	var value any // null removes it
	if leading {
		value = IngestLeaderValue
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{IngestLeaderLabel: value}}})
	if err != nil {
		return fmt.Errorf("encoding the label patch: %w", err)
	}
	pod := &corev1.Pod{}
	pod.Name, pod.Namespace = l.pod.Name, l.pod.Namespace
	if err := l.client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, body)); err != nil {
		return fmt.Errorf("patching pod %s: %w", l.pod, err)
	}
	return nil
}

// addLeaderLabel adds the label keeper of the process's own pod to mgr, both its runnables;
// outside a pod (no EnvPodName and EnvPodNamespace) nothing.
func addLeaderLabel(mgr manager.Manager, log logr.Logger) error {
	pod, ok := OwnPod()
	if !ok {
		log.Info("Not in a pod (no " + EnvPodName + " and " + EnvPodNamespace + "): no ingest leader label")
		return nil
	}
	l := NewLeaderLabel(mgr.GetClient(), pod, log)
	if err := mgr.Add(l); err != nil {
		return fmt.Errorf("ingest leader label: %w", err)
	}
	if err := mgr.Add(l.Leader()); err != nil {
		return fmt.Errorf("ingest leader label: %w", err)
	}
	return nil
}
