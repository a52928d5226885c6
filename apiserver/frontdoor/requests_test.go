package frontdoor

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// Every answer of a listener is counted by status class (429 apart) whoever wrote it; its time
// is observed, but for an event stream (which lasts); a stream still flushes through the
// door's writer.
func TestRequestMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, "ok")
		case "/busy":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/missing":
			http.NotFound(w, r)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: 1\n\n")
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flushing through the door: %v", err)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, logr.Discard(), Timeouts{Header: 5 * time.Second, Read: 5 * time.Second, Write: 5 * time.Second, Idle: 5 * time.Second},
			Listener{Name: "test-requests", Listener: ln, Limits: ConnLimits{Total: 10, PerAddress: 10}, Handler: handler})
	}()
	defer func() { cancel(); <-served }()

	counts := map[string]int{"/ok": 3, "/busy": 2, "/missing": 1, "/stream": 1}
	for path, n := range counts {
		for range n {
			resp, err := http.Get("http://" + ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	for code, want := range map[string]float64{"2xx": 4, "429": 2, "4xx": 1, "5xx": 0, "3xx": 0} {
		if got := testutil.ToFloat64(requestsTotal.WithLabelValues("test-requests", code)); got != want {
			t.Errorf("%s answers counted %v, want %v", code, got, want)
		}
	}
	m := &dto.Metric{}
	if err := requestDuration.WithLabelValues("test-requests").(prometheus.Metric).Write(m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetHistogram().GetSampleCount(); got != 6 {
		t.Errorf("%d durations observed, want 6 (the stream's not)", got)
	}
}
