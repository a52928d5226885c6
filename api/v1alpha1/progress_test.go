package v1alpha1

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func entry(typ string, current, total int64) ProgressEntry {
	return ProgressEntry{Type: typ, Current: current, Total: total}
}

func TestProgressSummary(t *testing.T) {
	cases := map[string]struct {
		entries []ProgressEntry
		want    string
	}{
		"no entries":             {nil, ""},
		"bytes as percentage":    {[]ProgressEntry{entry("upload", 16889, 12836332)}, "0%"},
		"percentage rounds down": {[]ProgressEntry{entry("upload", 999, 1000)}, "99%"},
		"done":                   {[]ProgressEntry{entry("upload", 1000, 1000)}, "100%"},
		"over total is capped":   {[]ProgressEntry{entry("download", 1200, 1000)}, "100%"},
		"counts as fraction":     {[]ProgressEntry{entry("upload_count", 25, 34)}, "25/34"},
		"unknown total":          {[]ProgressEntry{entry("download", 512, 0)}, "512/?"},
		"upload beats its count": {
			[]ProgressEntry{entry("upload_count", 25, 34), entry("upload_single_0", 1, 2), entry("upload", 50, 100)},
			"50%",
		},
		"imported beats indexed": {[]ProgressEntry{entry("indexed", 90, 100), entry("imported", 10, 100)}, "10/100"},
		"custom types: first by name": {
			[]ProgressEntry{entry("zeta", 1, 2), entry("alpha", 3, 4)}, "75%",
		},
		"huge values do not overflow": {
			[]ProgressEntry{entry("upload", math.MaxInt64/2, math.MaxInt64)}, "49%",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ProgressSummary(tc.entries)); diff != "" {
				t.Errorf("ProgressSummary() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTaskPhaseIsFinished(t *testing.T) {
	want := map[TaskPhase]bool{
		TaskPhaseQueued: false, TaskPhaseProcessing: false, TaskPhaseSuspending: false,
		TaskPhaseCompleted: true, TaskPhaseError: true, TaskPhaseCanceled: true,
	}
	got := map[TaskPhase]bool{}
	for p := range want {
		got[p] = p.IsFinished()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IsFinished mismatch (-want +got):\n%s", diff)
	}
}
