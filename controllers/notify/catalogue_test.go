package notify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/notifications.md lists every type the operator sends, with its id's form.
func TestCatalogueIsComplete(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "notifications.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{Queued, Started, Suspended, Resumed, Stalled, Unstalled, Progress, Succeeded, Failed, Canceled, Deleted} {
		a := Announcement{Seq: 3, What: what, Entry: "upload", Milestone: 50}
		row := "| " + what + " | `" + a.Type() + "` |"
		id := "`" + strings.Replace(strings.Replace(a.ID("<uid>"), ".3", ".<seq>", 1), "upload.50", "<entry>.<pct>", 1) + "`"
		if !strings.Contains(string(doc), row) || !strings.Contains(string(doc), id) {
			t.Errorf("docs/notifications.md has no row %q with the id %s", row, id)
		}
	}
}
