package progress

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// sink is where a writer's progress goes: the task's status on kube-apiserver (directSink), or
// the operator's ingest endpoint (pushSink). The reporter, the CLI's one-entry commands and its
// file mode all write through one, so both paths keep one protocol each.
type sink interface {
	// put sends one writer's whole state (entries sorted by type); final at Close. resend is
	// how soon to send it again unchanged (values the operator has not written yet), 0 never.
	put(ctx context.Context, entries []workflowv1alpha1.ProgressEntry, final bool) (resend time.Duration, err error)
	// change applies a one-entry command's change, computed from what the task shows (fm is the
	// direct path's field manager).
	change(ctx context.Context, c ingest.Change, fm string) error
}

// newSink is the sink opts name: Ingest when set, else Config.
func newSink(opts Options, stats *counters) (sink, error) {
	if opts.Ingest != nil {
		return newPushSink(opts, stats)
	}
	return newDirectSink(opts, stats)
}

// IngestTarget is where a task's pods push their progress when the operator takes pushes
// (--progress-ingest): the controller injects it into every container of the task's pods.
type IngestTarget struct {
	// URL is the task's push URL on the operator's ingest Service ($WORKFLOWTASK_PROGRESS_URL).
	URL string
	// CAData is the PEM bundle that verifies the operator's certificate
	// ($WORKFLOWTASK_PROGRESS_CA); empty uses the system's roots.
	CAData []byte
	// TokenFile is the pod's projected ServiceAccount token for the ingest audience
	// ($WORKFLOWTASK_PROGRESS_TOKEN_FILE), read again when the kubelet rotates it. Token, when
	// set, is used instead (a program that holds its token).
	TokenFile, Token string
}

// IngestTargetFromEnvironment is the target the controller injected into a task's pod, nil
// when it injected none (the operator does not take pushes: write the status directly).
func IngestTargetFromEnvironment() (*IngestTarget, error) {
	raw := os.Getenv(ingest.EnvURL)
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("progress: %s=%q is not an https URL", ingest.EnvURL, raw)
	}
	t := &IngestTarget{URL: raw, CAData: []byte(os.Getenv(ingest.EnvCA)), TokenFile: os.Getenv(ingest.EnvTokenFile)}
	if t.TokenFile == "" {
		return nil, errors.New("progress: " + ingest.EnvURL + " is set but " + ingest.EnvTokenFile + " is not")
	}
	return t, nil
}
