package v1alpha1

import (
	"math/bits"
	"strconv"
	"strings"
)

// mainProgressTypes lists, most telling first, the progress types that summarise a whole task:
// byte totals of the task's main step, then item counts. upload_single_<i> and other per-thread
// entries never summarise a task.
var mainProgressTypes = []string{
	"upload", "imported", "archive_size", "extract_size", "download", "relocate",
	"upload_count", "archive_count", "extract_count", "indexed",
}

// MainProgressEntry returns the entry that best summarises the task: the first of the
// well-known whole-task types present, else the entry whose type sorts first. It returns nil
// for no entries.
func MainProgressEntry(entries []ProgressEntry) *ProgressEntry {
	for _, t := range mainProgressTypes {
		for i := range entries {
			if entries[i].Type == t {
				return &entries[i]
			}
		}
	}
	var best *ProgressEntry
	for i := range entries {
		if best == nil || entries[i].Type < best.Type {
			best = &entries[i]
		}
	}
	return best
}

// IsCountProgressType reports whether a progress type counts items (files) rather than bytes.
func IsCountProgressType(t string) bool {
	return strings.HasSuffix(t, "_count") || t == "imported" || t == "indexed"
}

// ProgressSummary renders the main entry for the Progress column: "current/total" for item
// counts, a whole percentage (rounded down, at most 100%) for bytes, and "current/?" while the
// total is not known. It returns "" for no entries.
func ProgressSummary(entries []ProgressEntry) string {
	e := MainProgressEntry(entries)
	switch {
	case e == nil:
		return ""
	case e.Total <= 0:
		return strconv.FormatInt(e.Current, 10) + "/?"
	case IsCountProgressType(e.Type):
		return strconv.FormatInt(e.Current, 10) + "/" + strconv.FormatInt(e.Total, 10)
	default:
		return strconv.FormatInt(percent(e.Current, e.Total), 10) + "%"
	}
}

// percent is floor(100*current/total) clamped to [0, 100], computed exactly in 128 bits.
func percent(current, total int64) int64 {
	if current <= 0 {
		return 0
	}
	if current >= total {
		return 100
	}
	// 0 < current < total, so the 128-bit product divided by total is below 100.
	hi, lo := bits.Mul64(uint64(current), 100)
	q, _ := bits.Div64(hi, lo, uint64(total))
	return int64(q)
}
