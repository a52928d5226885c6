// Package progressmetrics exposes a progress Reporter's writes to Prometheus, for job programs
// that serve metrics of their own:
//
//	reporter, _ := progress.NewFromEnvironment(progress.Options{})
//	prometheus.MustRegister(progressmetrics.NewCollector(reporter))
//
// Series: workflowtask_progress_writes_total{result="ok|conflict|throttled|error"} and
// workflowtask_progress_write_bytes_total. No task or pod label: the job's own scrape target
// says which it is.
package progressmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

var (
	writesDesc = prometheus.NewDesc("workflowtask_progress_writes_total",
		"Progress write attempts by result: ok, conflict (the task changed in between; retried at once), throttled (429), error.",
		[]string{"result"}, nil)
	bytesDesc = prometheus.NewDesc("workflowtask_progress_write_bytes_total",
		"Bytes of progress written (server-side apply bodies sent).", nil, nil)
)

// statser is what the collector reads (a *progress.Reporter).
type statser interface{ Stats() progress.Stats }

type collector struct{ r statser }

// NewCollector returns a collector of the reporter's write counts, read at scrape time.
func NewCollector(r *progress.Reporter) prometheus.Collector { return collector{r} }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- writesDesc; ch <- bytesDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Stats()
	for result, n := range map[string]int64{"ok": s.OK, "conflict": s.Conflict, "throttled": s.Throttled, "error": s.Error} {
		ch <- prometheus.MustNewConstMetric(writesDesc, prometheus.CounterValue, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(s.Bytes))
}
