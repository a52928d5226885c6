package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// maxRecordMessage bounds the verdict's message kept in the record (annotations share 256 KiB).
const maxRecordMessage = 2048

// taskRecord is what the controller itself established about a task: that it created the Job,
// when it first saw the task running, and the verdict it reached when the task finished, with
// the time. It lives in the task's metadata (AnnotationRecord), which the task's pods cannot
// write: they may patch only the status subresource, and status writes never change
// metadata. The status is computed from this record and fresh observations, never from the
// status read back, so a forged status is overwritten instead of believed.
type taskRecord struct {
	// JobCreated: the controller created the task's Job (a Job missing later was deleted).
	JobCreated bool `json:"jobCreated,omitempty"`
	// StartTime is when the controller first saw the task Processing.
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// Phase, Reason and Message are the verdict on a finished task; empty while it runs.
	Phase   workflowv1alpha1.TaskPhase `json:"phase,omitempty"`
	Reason  string                     `json:"reason,omitempty"`
	Message string                     `json:"message,omitempty"`
	// CompletionTime is when the controller reached the verdict. TTL counts from it.
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Announced is what the controller has announced about the task (announce).
	Announced announcedState `json:"announced,omitzero"`
	// Outbox holds the announcements not yet delivered to every notification sink, when the
	// task has any (controllers/notify).
	Outbox *notify.Outbox `json:"outbox,omitempty"`
}

// finished reports whether the controller has reached a verdict on the task.
func (r taskRecord) finished() bool { return r.Phase.IsFinished() }

// empty reports whether the record holds nothing: the annotation is missing, cannot be parsed,
// or is "{}". The controller writes its record as soon as it has created the Job, so a task with
// an empty record either has no Job yet or lost its record to someone else's edit.
func (r taskRecord) empty() bool { return !r.JobCreated && r.StartTime == nil && !r.finished() }

// readRecord returns the task's record. A record the controller cannot parse (edited by hand)
// counts as none: trustRecord then rebuilds it from the Job and the status.
func readRecord(task *workflowv1alpha1.WorkflowTask) taskRecord {
	var rec taskRecord
	raw, ok := task.Annotations[workflowv1alpha1.AnnotationRecord]
	if !ok || json.Unmarshal([]byte(raw), &rec) != nil {
		return taskRecord{}
	}
	if !rec.Phase.IsFinished() {
		rec.Phase, rec.Reason, rec.Message, rec.CompletionTime = "", "", "", nil
	}
	return rec
}

// advanceRecord is the record after this reconcile: the Job's creation, the start and the
// verdict are noted once, at the moment the controller first sees them, and never changed.
func advanceRecord(rec taskRecord, obs jobObservation, state taskState, now metav1.Time) taskRecord {
	if obs.job != nil {
		rec.JobCreated = true
	}
	if rec.StartTime == nil && state.phase == workflowv1alpha1.TaskPhaseProcessing {
		rec.StartTime = &now
	}
	if !rec.finished() && state.phase.IsFinished() {
		rec.Phase, rec.Reason, rec.CompletionTime = state.phase, state.reason, &now
		rec.Message = truncateUTF8(state.message, maxRecordMessage)
	}
	return rec
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// writeRecordIfChanged stores the record in the task's annotation when it changed, before the
// status that reflects it is written. It replaces the record only if the task still holds the
// one read (a JSON patch test), so a reconcile of a stale cached copy can neither undo nor
// repeat what a newer record says (its announcements above all); it fails instead, and the
// task is reconciled again.
func (r *WorkflowTaskReconciler) writeRecordIfChanged(ctx context.Context, task *workflowv1alpha1.WorkflowTask, old, rec taskRecord) error {
	if recordEqual(old, rec) {
		return nil
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding the task record: %w", err)
	}
	var patch client.Patch
	if read, ok := task.Annotations[workflowv1alpha1.AnnotationRecord]; ok {
		path := "/metadata/annotations/" + strings.ReplaceAll(workflowv1alpha1.AnnotationRecord, "/", "~1")
		ops, err := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/uid", "value": task.UID}, // never annotate a newer task of the same name
			{"op": "test", "path": path, "value": read},
			{"op": "replace", "path": path, "value": string(raw)},
		})
		if err != nil {
			return fmt.Errorf("encoding the task record patch: %w", err)
		}
		patch = client.RawPatch(types.JSONPatchType, ops)
	} else {
		merge, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"uid":         task.UID, // precondition: never annotate a newer task of the same name
			"annotations": map[string]string{workflowv1alpha1.AnnotationRecord: string(raw)},
		}})
		if err != nil {
			return fmt.Errorf("encoding the task record patch: %w", err)
		}
		patch = client.RawPatch(types.MergePatchType, merge)
	}
	// A copy takes the server's answer: the task must stay as read, or the status patch computed
	// from it next would undo progress written meanwhile.
	if err := r.Patch(ctx, task.DeepCopy(), patch); err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
			return &staleRecordError{err: err}
		}
		return fmt.Errorf("writing the task record: %w", err)
	}
	return nil
}

// staleRecordError: the task's record changed since the copy reconciled was read.
type staleRecordError struct{ err error }

func (e *staleRecordError) Error() string {
	return "the task's record changed since it was read (reconciled again): " + e.err.Error()
}
func (e *staleRecordError) Unwrap() error { return e.err }

// recordEqual compares records with their times at the API's one-second precision.
func recordEqual(a, b taskRecord) bool {
	timeEq := func(x, y *metav1.Time) bool {
		return (x == nil) == (y == nil) && (x == nil || x.Rfc3339Copy().Time.Equal(y.Rfc3339Copy().Time))
	}
	return a.JobCreated == b.JobCreated && a.Phase == b.Phase && a.Reason == b.Reason && a.Message == b.Message &&
		timeEq(a.StartTime, b.StartTime) && timeEq(a.CompletionTime, b.CompletionTime) &&
		equality.Semantic.DeepEqual(a.Announced, b.Announced) && equality.Semantic.DeepEqual(a.Outbox, b.Outbox)
}
