package progress

import (
	"regexp"
	"sync/atomic"
)

// MaxEntries is the most progress entries a task can hold (the CRD's MaxItems); a reporter
// never holds more, so its memory stays bounded whatever its caller does.
const MaxEntries = 128

// MaxIdentifierLength is the longest identifier the API accepts; longer ones are cut.
const MaxIdentifierLength = 1024

var typePattern = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// ValidType reports whether t is a progress type the API accepts: lower-case snake_case,
// 1 to 63 characters (e.g. upload, upload_count, upload_single_0).
func ValidType(t string) bool { return len(t) <= 63 && typePattern.MatchString(t) }

// Entry is one progress type of a Reporter. Its methods are safe from any number of
// goroutines, lock-free and allocation-free; they only record, and the Reporter's background
// loop sends. Get one with Reporter.Entry and keep it for hot loops.
type Entry struct {
	typ        string
	current    atomic.Int64
	total      atomic.Int64
	identifier atomic.Pointer[string]
	version    atomic.Uint64 // bumped by every change
	deleted    atomic.Bool
	r          *Reporter
}

// Set records current and total. Negative values are recorded as 0.
func (e *Entry) Set(current, total int64) {
	e.current.Store(max(current, 0))
	e.total.Store(max(total, 0))
	e.changed()
}

// SetCurrent records current, keeping total.
func (e *Entry) SetCurrent(current int64) {
	e.current.Store(max(current, 0))
	e.changed()
}

// Add adds delta to current (never going below 0).
func (e *Entry) Add(delta int64) {
	if e.current.Add(delta) < 0 {
		e.current.Store(0)
	}
	e.changed()
}

// SetTotal records total, keeping current.
func (e *Entry) SetTotal(total int64) {
	e.total.Store(max(total, 0))
	e.changed()
}

// SetIdentifier records the identifier (cut to MaxIdentifierLength bytes). It allocates; call
// it when the identifier changes, not per byte processed.
func (e *Entry) SetIdentifier(id string) {
	if len(id) > MaxIdentifierLength {
		id = id[:MaxIdentifierLength]
	}
	e.identifier.Store(&id)
	e.changed()
}

func (e *Entry) changed() {
	e.version.Add(1)
	e.r.markDirty()
}

// Type is the entry's progress type.
func (e *Entry) Type() string { return e.typ }

// Value is one entry's recorded state.
type Value struct {
	Current, Total int64
	Identifier     string
}

// Values returns what the reporter holds now, by type: what its next write sends. It reads
// without locking, so it never holds up the callers that record.
func (r *Reporter) Values() map[string]Value {
	entries := *r.entries.Load()
	out := make(map[string]Value, len(entries))
	for typ, e := range entries {
		v := Value{Current: e.current.Load(), Total: e.total.Load()}
		if id := e.identifier.Load(); id != nil {
			v.Identifier = *id
		}
		out[typ] = v
	}
	return out
}
