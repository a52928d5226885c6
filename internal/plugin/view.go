package plugin

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/progressrate"
)

// RowKind tells the renderers how to draw a row of the live view.
type RowKind int

// The kinds of rows: a task's header, one of its progress entries (drawn with a bar), a
// condition message under them.
const (
	RowTask RowKind = iota
	RowEntry
	RowMessage
)

// Row is one line of the live view, computed from a task, its rate estimator and the clock.
// Key is stable while the thing it shows exists, so a renderer can keep a bar per key.
type Row struct {
	Key  string
	Kind RowKind
	// Task names the task the row belongs to (namespace/name).
	Task string
	// Label is the entry's type (entry rows only).
	Label string
	// Text is the rest of the line: the amount, rate and ETA of an entry; the phase of a
	// task; a condition message.
	Text string
	// Current and Total are an entry's values (Total 0: unknown, drawn as a spinner).
	Current, Total int64
}

// taskView follows one task for the live view: its latest state and the rate of each entry.
type taskView struct {
	task *workflowv1alpha1.WorkflowTask
	est  *progressrate.Estimator
	// seen is when each entry's current value was first seen, the update time of an entry
	// whose writer gave none (the progress stream carries no times).
	seen map[string]entrySeen
	// phaseVisible is false when the task comes from the progress stream, which has only
	// the progress map.
	phaseVisible bool
}

type entrySeen struct {
	current int64
	at      time.Time
}

func newTaskView(phaseVisible bool) *taskView {
	return &taskView{est: progressrate.New(), seen: map[string]entrySeen{}, phaseVisible: phaseVisible}
}

// observe takes the task's latest state: entries gone from it are forgotten.
func (v *taskView) observe(t *workflowv1alpha1.WorkflowTask, now time.Time) {
	v.task = t
	present := map[string]bool{}
	for _, e := range t.Status.Progress {
		present[e.Type] = true
		if s, ok := v.seen[e.Type]; !ok || s.current != e.Current {
			v.seen[e.Type] = entrySeen{current: e.Current, at: now}
		}
	}
	for typ := range v.seen {
		if !present[typ] {
			delete(v.seen, typ)
			v.est.Forget(typ)
		}
	}
}

// rows renders the task at now: a header, its entries in natural order, then the messages of
// the conditions a person must notice.
func (v *taskView) rows(now time.Time) []Row {
	t := v.task
	name := key(t)
	rows := []Row{{Key: name, Kind: RowTask, Task: name, Text: v.header()}}
	entries := append([]workflowv1alpha1.ProgressEntry(nil), t.Status.Progress...)
	sort.Slice(entries, func(i, j int) bool { return naturalLess(entries[i].Type, entries[j].Type) })
	for _, e := range entries {
		at := v.seen[e.Type].at
		if e.UpdateTime != nil {
			at = e.UpdateTime.Time
		}
		est := v.est.Observe(e.Type, e.Current, e.Total, at, now)
		if v.visibleDone() {
			est = progressrate.Estimate{} // a finished task has no rate and no ETA
		}
		rows = append(rows, Row{Key: name + "/entry/" + e.Type, Kind: RowEntry, Task: name, Label: oneLine(e.Type),
			Text: entryText(e, est), Current: e.Current, Total: e.Total})
	}
	for _, m := range messages(t) {
		rows = append(rows, Row{Key: name + "/message/" + m.Type, Kind: RowMessage, Task: name, Text: m.Type + ": " + m.Message})
	}
	return rows
}

func (v *taskView) header() string {
	t := v.task
	if !v.phaseVisible {
		if len(t.Status.Progress) == 0 {
			return "no progress yet (or no task of yours by this name or ID)  [progress stream: no phase without RBAC on workflowtasks]"
		}
		return "[progress stream: no phase without RBAC on workflowtasks]"
	}
	phase := string(t.Status.Phase)
	if phase == "" {
		phase = "Pending"
	}
	parts := []string{phase, string(t.Spec.Type)}
	if t.Spec.Owner != "" {
		parts = append(parts, "owner "+t.Spec.Owner)
	}
	if t.Status.ID != "" {
		parts = append(parts, "ID "+t.Status.ID)
	}
	return oneLine(strings.Join(parts, "  ")) // the owner is any string its creator chose
}

// visibleDone reports whether the task is seen to have finished: its phase is terminal or,
// when the phase is not visible (the progress stream), every entry reached its known total.
func (v *taskView) visibleDone() bool {
	if v.phaseVisible {
		return v.task.Status.Phase.IsFinished()
	}
	for _, e := range v.task.Status.Progress {
		if e.Total <= 0 || e.Current < e.Total {
			return false
		}
	}
	return len(v.task.Status.Progress) > 0
}

// messages are the conditions worth a line under the bars: why the task stalled, failed, was
// suspended or canceled.
func messages(t *workflowv1alpha1.WorkflowTask) []metav1.Condition {
	var out []metav1.Condition
	seen := map[string]bool{}
	for _, typ := range []string{workflowv1alpha1.ConditionFailed, workflowv1alpha1.ConditionCanceled, workflowv1alpha1.ConditionStalled, workflowv1alpha1.ConditionSuspended} {
		c := meta.FindStatusCondition(t.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionTrue || c.Message == "" || seen[c.Message] {
			continue // (a failed task is also Stalled, with the same message: said once)
		}
		seen[c.Message] = true
		out = append(out, metav1.Condition{Type: typ, Message: oneLine(c.Message)})
	}
	return out
}

// entryText is an entry's amount, share, rate and ETA: "1.0 KiB / 4.0 KiB  25%  512 B/s  ETA 6s".
func entryText(e workflowv1alpha1.ProgressEntry, est progressrate.Estimate) string {
	parts := []string{amount(e)}
	if e.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d%%", share(e.Current, e.Total)))
	}
	switch {
	case est.Stalled:
		parts = append(parts, "stalled")
	case est.Rate > 0:
		parts = append(parts, rate(e.Type, est.Rate))
	}
	if e.Total > 0 && e.Current < e.Total && !est.Stalled {
		parts = append(parts, "ETA "+progressrate.ETA(est))
	}
	if e.Identifier != "" {
		parts = append(parts, oneLine(e.Identifier))
	}
	return oneLine(strings.Join(parts, "  ")) // the owner is any string its creator chose
}

// amount shows an entry's values: counts as n/m (n/? unknown), bytes humanly.
func amount(e workflowv1alpha1.ProgressEntry) string {
	if workflowv1alpha1.IsCountProgressType(e.Type) {
		return progressrate.Count(e.Current, e.Total)
	}
	total := "?"
	if e.Total > 0 {
		total = progressrate.Bytes(e.Total)
	}
	return progressrate.Bytes(e.Current) + " / " + total
}

func rate(typ string, perSecond float64) string {
	if workflowv1alpha1.IsCountProgressType(typ) {
		return strconv.FormatFloat(perSecond, 'f', 1, 64) + "/s"
	}
	return progressrate.Bytes(int64(perSecond)) + "/s"
}

// share is floor(100*current/total) clamped to [0, 100].
func share(current, total int64) int64 {
	if total <= 0 || current <= 0 {
		return 0
	}
	if current >= total {
		return 100
	}
	return int64(float64(current) / float64(total) * 100)
}

// naturalLess orders "upload_single_2" before "upload_single_10": runs of digits compare
// by value.
func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := leadingDigits(a)
			nb, rb := leadingDigits(b)
			if na != nb {
				va, _ := strconv.ParseUint(strings.TrimLeft(na, "0"), 10, 64)
				vb, _ := strconv.ParseUint(strings.TrimLeft(nb, "0"), 10, 64)
				if va != vb {
					return va < vb
				}
				return na < nb
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func leadingDigits(s string) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// oneLine keeps text from the cluster (written by a task's own pod, the controller, or whoever
// may create Events) from breaking or disguising the view: control characters (C0, DEL and C1,
// so no escape sequence reaches the terminal) and bidirectional formatting characters (U+061C,
// U+200E–U+200F, U+202A–U+202E, U+2066–U+2069, which reorder what the terminal shows) become
// spaces, and it is cut at 200 runes. Every string of the plugin's output that the cluster
// supplies goes through it.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:199]) + "…"
	}
	return s
}

// finalLine is the line a finished watch ends with: "default/upload: Completed" and the
// reason for anything else.
func finalLine(t *workflowv1alpha1.WorkflowTask) string {
	line := key(t) + ": " + string(t.Status.Phase)
	for _, typ := range []string{workflowv1alpha1.ConditionFailed, workflowv1alpha1.ConditionCanceled} {
		if c := meta.FindStatusCondition(t.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionTrue && c.Message != "" {
			return line + " (" + oneLine(c.Message) + ")"
		}
	}
	return line
}
