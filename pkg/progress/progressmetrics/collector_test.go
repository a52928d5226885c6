package progressmetrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

type fixed progress.Stats

func (f fixed) Stats() progress.Stats { return progress.Stats(f) }

func TestCollector(t *testing.T) {
	c := collector{fixed{OK: 7, Conflict: 2, Throttled: 1, Error: 3, Bytes: 4096}}
	want := `
# HELP workflowtask_progress_write_bytes_total Bytes of progress written (server-side apply bodies sent).
# TYPE workflowtask_progress_write_bytes_total counter
workflowtask_progress_write_bytes_total 4096
# HELP workflowtask_progress_writes_total Progress write attempts by result: ok, conflict (the task changed in between; retried at once), throttled (429), error.
# TYPE workflowtask_progress_writes_total counter
workflowtask_progress_writes_total{result="conflict"} 2
workflowtask_progress_writes_total{result="error"} 3
workflowtask_progress_writes_total{result="ok"} 7
workflowtask_progress_writes_total{result="throttled"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
