package frontdoor

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Request metrics, by listener: every answer the door's listeners give, whoever wrote it (the
// endpoint, the authenticator's refusals, the metrics and probe handlers).
const (
	RequestsMetric        = "workflowtask_door_requests_total"
	RequestDurationMetric = "workflowtask_door_request_duration_seconds"
)

// Codes of RequestsMetric: the class of the status, with 429 apart (the door's budgets).
var requestCodes = []string{"2xx", "3xx", "4xx", "429", "5xx"}

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: RequestsMetric,
		Help: "Answers of the operator's listeners, by listener and status class (429 apart: a budget or the review slots refused)."},
		[]string{"listener", "code"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: RequestDurationMetric,
		Help:    "Time to answer a request on the operator's listeners, by listener (event streams not counted: they last).",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15}},
		[]string{"listener"})
)

func init() { ctrlmetrics.Registry.MustRegister(requestsTotal, requestDuration) }

// requestMetrics are one listener's request metrics, bound once (a label lookup per request
// would cost the hot path a hash and a lock).
type requestMetrics struct {
	codes    map[string]prometheus.Counter
	duration prometheus.Observer
}

func newRequestMetrics(listener string) requestMetrics {
	m := requestMetrics{codes: map[string]prometheus.Counter{}, duration: requestDuration.WithLabelValues(listener)}
	for _, c := range requestCodes {
		m.codes[c] = requestsTotal.WithLabelValues(listener, c)
	}
	return m
}

// observe counts an answer with status code, and its duration unless it was an event stream.
func (m requestMetrics) observe(code int, contentType string, took time.Duration) {
	class := "2xx"
	switch {
	case code == http.StatusTooManyRequests:
		class = "429"
	case code >= 500:
		class = "5xx"
	case code >= 400:
		class = "4xx"
	case code >= 300:
		class = "3xx"
	}
	m.codes[class].Inc()
	if !strings.HasPrefix(contentType, "text/event-stream") {
		m.duration.Observe(took.Seconds())
	}
}

// statusWriter notes the status an answer was given; Unwrap keeps http.ResponseController
// (flushing an event stream, deadlines) working through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
