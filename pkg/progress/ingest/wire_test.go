package ingest

import (
	"strings"
	"testing"

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
	}
	for name, tc := range cases {
		if err := tc.push.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %t", name, err, tc.ok)
		}
	}
}
