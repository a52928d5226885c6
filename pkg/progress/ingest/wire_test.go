package ingest

import (
	"math"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

func TestParsePath(t *testing.T) {
	for path, want := range map[string]string{
		Path("ns", "t"): "ns/t",
		"/ingest/v1alpha1/namespaces/ns/workflowtasks/t/progress/x": "",
		"/ingest/v1alpha1/namespaces//workflowtasks/t/progress":     "",
		"/ingest/v1alpha1/namespaces/ns/workflowtasks//progress":    "",
		"/ingest/v1alpha1/namespaces/ns/jobs/t/progress":            "",
		"/ingest/v1alpha2/namespaces/ns/workflowtasks/t/progress":   "",
	} {
		ns, name, ok := ParsePath(path)
		if got := ns + "/" + name; ok != (want != "") || ok && got != want {
			t.Errorf("ParsePath(%q) = %q, %t; want %q", path, got, ok, want)
		}
	}
}

// A push is held to status.progress's schema, so what is taken can be written.
func TestValidate(t *testing.T) {
	entry := func(typ string) workflowv1alpha1.ProgressEntry {
		return workflowv1alpha1.ProgressEntry{Type: typ, Current: 1, Total: 2}
	}
	many := make([]workflowv1alpha1.ProgressEntry, MaxEntries+1)
	for i := range many {
		many[i] = entry("upload_single_" + strings.Repeat("1", i%5+1) + string(rune('a'+i%26)) + strings.Repeat("0", i/26))
	}
	cases := map[string]struct {
		push Push
		ok   bool
	}{
		"good":             {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{entry("upload"), entry("upload_count")}}, true},
		"no entries":       {Push{TaskUID: "u"}, true},
		"no task UID":      {Push{Entries: []workflowv1alpha1.ProgressEntry{entry("upload")}}, false},
		"bad type":         {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{entry("Upload")}}, false},
		"long type":        {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{entry("a" + strings.Repeat("b", 63))}}, false},
		"type twice":       {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{entry("upload"), entry("upload")}}, false},
		"negative":         {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: -1}}}, false},
		"long identifier":  {Push{TaskUID: "u", Entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Identifier: strings.Repeat("x", 1025)}}}, false},
		"too many entries": {Push{TaskUID: "u", Entries: many}, false},
		"a named writer":   {Push{TaskUID: "u", Writer: "workflowtask-progress/pod/file"}, true},
		"a long writer":    {Push{TaskUID: "u", Writer: strings.Repeat("w", MaxWriterLength+1)}, false},
		"a control char":   {Push{TaskUID: "u", Writer: "a\nb"}, false},
	}
	for name, tc := range cases {
		if err := tc.push.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %t", name, err, tc.ok)
		}
	}
}

// A change is one of set, add and delete, within the entry's bounds.
func TestValidateChange(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	id := strings.Repeat("x", 1025)
	cases := map[string]struct {
		change Change
		ok     bool
	}{
		"set":               {Change{TaskUID: "u", Type: "files", Current: n(1), Total: n(2)}, true},
		"add":               {Change{TaskUID: "u", Type: "files", Add: n(-3)}, true},
		"delete":            {Change{TaskUID: "u", Type: "files", Delete: true}, true},
		"nothing":           {Change{TaskUID: "u", Type: "files"}, false},
		"set and add":       {Change{TaskUID: "u", Type: "files", Current: n(1), Add: n(1)}, false},
		"delete with total": {Change{TaskUID: "u", Type: "files", Delete: true, Total: n(1)}, false},
		"negative":          {Change{TaskUID: "u", Type: "files", Current: n(-1)}, false},
		"bad type":          {Change{TaskUID: "u", Type: "Files", Add: n(1)}, false},
		"no task UID":       {Change{Type: "files", Add: n(1)}, false},
		"long identifier":   {Change{TaskUID: "u", Type: "files", Current: n(1), Identifier: &id}, false},
	}
	for name, tc := range cases {
		if err := tc.change.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %t", name, err, tc.ok)
		}
	}
}

// A change's entry: from what the task shows, values not given kept, an add floored at 0 and
// capped at the largest int64.
func TestChangeEntry(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	have := workflowv1alpha1.ProgressEntry{Type: "files", Current: 3, Total: 10, Identifier: "a"}
	now := time.Now()
	for name, tc := range map[string]struct {
		change       Change
		found        bool
		current, tot int64
		identifier   string
	}{
		"set keeps total": {Change{Type: "files", Current: n(4)}, true, 4, 10, "a"},
		"set all":         {Change{Type: "files", Current: n(4), Total: n(5), Identifier: ptr.To("b")}, true, 4, 5, "b"},
		"add":             {Change{Type: "files", Add: n(2)}, true, 5, 10, "a"},
		"add below zero":  {Change{Type: "files", Add: n(-9)}, true, 0, 10, "a"},
		"add overflow":    {Change{Type: "files", Add: n(math.MaxInt64)}, true, math.MaxInt64, 10, "a"},
		"add to none":     {Change{Type: "files", Add: n(2)}, false, 2, 0, ""},
	} {
		e := tc.change.Entry(have, tc.found, now)
		if e.Current != tc.current || e.Total != tc.tot || e.Identifier != tc.identifier || e.UpdateTime == nil {
			t.Errorf("%s: %+v, want %d/%d %q with an update time", name, e, tc.current, tc.tot, tc.identifier)
		}
	}
}
