// Package ingest is the wire protocol by which a task's pods push their progress to the
// operator instead of writing the task's status themselves: the path, the token audience, the
// environment the controller injects, the request body and its bounds. The operator's endpoint
// serves it (apiserver); the reporter, the CLI and the sidecar speak it (pkg/progress).
package ingest

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

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
// same state). The writer is the pod whose token authenticated the push, and within the pod
// Writer (a pod may hold several: threads' reporters, the file sidecar, one-entry commands).
type Push struct {
	// TaskUID is the UID of the task the writer reports for: a task replaced by one of the same
	// name refuses the push (409), as a direct write's precondition does.
	TaskUID types.UID `json:"taskUID"`
	// Writer names the writer within its pod (as a field manager does in a direct write);
	// empty is the pod's default writer. At most MaxWriterLength characters.
	Writer string `json:"writer,omitempty"`
	// Entries are the writer's entries, each as in status.progress.
	Entries []workflowv1alpha1.ProgressEntry `json:"entries"`
	// Final says the writer is done (Close): its values are written at once.
	Final bool `json:"final,omitempty"`
}

// Change is a one-entry command's change (the CLI's set, add and delete): a PATCH of the same
// path. The operator computes the entry from what the task shows now (pushed values first, then
// the status), atomically, and keeps the result as the pod's writer named after the type — what
// a one-entry command's field manager is in a direct write.
type Change struct {
	// TaskUID is as in Push.
	TaskUID types.UID `json:"taskUID"`
	// Type is the entry's type.
	Type string `json:"type"`
	// Current sets the entry's current; Add adds to it instead (floored at 0). One of Current,
	// Add or Delete.
	Current *int64 `json:"current,omitempty"`
	Add     *int64 `json:"add,omitempty"`
	// Total and Identifier set those fields; nil keeps the entry's.
	Total      *int64  `json:"total,omitempty"`
	Identifier *string `json:"identifier,omitempty"`
	// Delete removes the type from the task, whoever pushed it (a writer that still reports it
	// brings it back with its next push, as in a direct write).
	Delete bool `json:"delete,omitempty"`
}

// Validate checks a change: one of Current, Add and Delete, and the entry's bounds.
func (c *Change) Validate() error {
	var errs []error
	if c.TaskUID == "" {
		errs = append(errs, errors.New("taskUID: required"))
	}
	if len(c.Type) == 0 || len(c.Type) > 63 || !typePattern.MatchString(c.Type) {
		errs = append(errs, errors.New("type: lower-case snake_case, 1 to 63 characters"))
	}
	n := 0
	for _, set := range []bool{c.Current != nil, c.Add != nil, c.Delete} {
		if set {
			n++
		}
	}
	if n != 1 {
		errs = append(errs, errors.New("one of current, add and delete"))
	}
	if c.Delete && (c.Total != nil || c.Identifier != nil) {
		errs = append(errs, errors.New("delete takes no total or identifier"))
	}
	if c.Current != nil && *c.Current < 0 || c.Total != nil && *c.Total < 0 {
		errs = append(errs, errors.New("current and total must not be negative"))
	}
	if c.Identifier != nil && len(*c.Identifier) > 1024 {
		errs = append(errs, errors.New("identifier: at most 1024 characters"))
	}
	return errors.Join(errs...)
}

// Entry is the entry a set or add change makes of have (the entry the task shows, found
// false when it has none), updated at now.
func (c *Change) Entry(have workflowv1alpha1.ProgressEntry, found bool, now time.Time) workflowv1alpha1.ProgressEntry {
	e := workflowv1alpha1.ProgressEntry{Type: c.Type, UpdateTime: ptr.To(metav1.NewMicroTime(now))}
	if found {
		e.Current, e.Total, e.Identifier = have.Current, have.Total, have.Identifier
	}
	switch {
	case c.Current != nil:
		e.Current = *c.Current
	case c.Add != nil && *c.Add > 0 && e.Current > math.MaxInt64-*c.Add:
		e.Current = math.MaxInt64
	case c.Add != nil:
		e.Current = max(e.Current+*c.Add, 0)
	}
	if c.Total != nil {
		e.Total = *c.Total
	}
	if c.Identifier != nil {
		e.Identifier = *c.Identifier
	}
	return e
}

// Ack is the data of a successful push's or change's answer (in the endpoint's envelope:
// {"code":0,"data":{...}}).
type Ack struct {
	// Pending says the writer's values are not in the task's status yet (they are live at the
	// endpoint). A writer whose last push was pending re-sends its whole state, unchanged, after
	// ResendAfterSeconds, until an answer is not pending: so values a replica held when it died
	// reach the next one.
	Pending bool `json:"pending"`
	// ResendAfterSeconds is the flush interval, with Pending.
	ResendAfterSeconds int `json:"resendAfterSeconds,omitempty"`
}

// MaxWriterLength bounds Push.Writer.
const MaxWriterLength = 128

var typePattern = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Validate checks a push against status.progress's schema: the same bounds the CRD enforces on a
// direct write, so what is accepted here can be written.
func (p *Push) Validate() error {
	var errs []error
	if p.TaskUID == "" {
		errs = append(errs, errors.New("taskUID: required"))
	}
	if len(p.Writer) > MaxWriterLength || strings.ContainsFunc(p.Writer, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		errs = append(errs, fmt.Errorf("writer: printable ASCII, at most %d characters", MaxWriterLength))
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
