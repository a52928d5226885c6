// Package ingest is the wire protocol by which a task's pods push their progress to the
// operator instead of writing the task's status themselves: the path, the token audience, the
// environment the controller injects, the request body and its bounds. The operator's endpoint
// serves it (apiserver); the reporter, the CLI and the sidecar speak it (pkg/progress).
package ingest

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Audience is the audience of the projected ServiceAccount token a pod pushes with: useless
// against kube-apiserver, and refused by the progress endpoint's readers' door.
const Audience = "ingest.progress.taskops.dev"

// PathPrefix starts every push path: PathPrefix + "namespaces/{ns}/workflowtasks/{name}/progress".
const PathPrefix = "/ingest/v1alpha1/"

// Path is where a pod of task namespace/name pushes.
func Path(namespace, name string) string {
	return PathPrefix + "namespaces/" + namespace + "/workflowtasks/" + name + "/progress"
}

// ParsePath returns the task a push path names.
func ParsePath(path string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(path, PathPrefix+"namespaces/")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "workflowtasks" || parts[3] != "progress" || parts[0] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// The environment the controller injects into every container of a task's pods when ingest is
// on: the push URL (the task's own path on the operator's ingest Service), the CA bundle that
// verifies it (PEM), and the file of the projected token.
const (
	EnvURL       = "WORKFLOWTASK_PROGRESS_URL"
	EnvCA        = "WORKFLOWTASK_PROGRESS_CA"
	EnvTokenFile = "WORKFLOWTASK_PROGRESS_TOKEN_FILE"
)

// Bounds of a push.
const (
	MaxEntries   = 128     // as status.progress
	MaxBodyBytes = 1 << 18 // 128 entries of the largest kind fit
)

// Push is one writer's whole state (a PUT: a retry, or a re-send after a restart, sends the
// same state). The writer is the pod whose token authenticated the push.
type Push struct {
	// TaskUID is the UID of the task the writer reports for: a task replaced by one of the same
	// name refuses the push (409), as a direct write's precondition does.
	TaskUID types.UID `json:"taskUID"`
	// Entries are the writer's entries, each as in status.progress.
	Entries []workflowv1alpha1.ProgressEntry `json:"entries"`
	// Final says the writer is done (Close): its values are written at once.
	Final bool `json:"final,omitempty"`
}

var typePattern = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Validate checks a push against status.progress's schema: the same bounds the CRD enforces on a
// direct write, so what is accepted here can be written.
func (p *Push) Validate() error {
	var errs []error
	if p.TaskUID == "" {
		errs = append(errs, errors.New("taskUID: required"))
	}
	if len(p.Entries) > MaxEntries {
		errs = append(errs, fmt.Errorf("entries: at most %d, got %d", MaxEntries, len(p.Entries)))
	}
	seen := make(map[string]bool, len(p.Entries))
	for i, e := range p.Entries {
		switch {
		case len(e.Type) == 0 || len(e.Type) > 63 || !typePattern.MatchString(e.Type):
			errs = append(errs, fmt.Errorf("entries[%d].type: lower-case snake_case, 1 to 63 characters", i))
		case seen[e.Type]:
			errs = append(errs, fmt.Errorf("entries[%d].type: %q twice", i, e.Type))
		}
		seen[e.Type] = true
		if e.Current < 0 || e.Total < 0 {
			errs = append(errs, fmt.Errorf("entries[%d]: current and total must not be negative", i))
		}
		if len(e.Identifier) > 1024 {
			errs = append(errs, fmt.Errorf("entries[%d].identifier: at most 1024 characters", i))
		}
	}
	return errors.Join(errs...)
}
