package scale_test

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

var wrkFlag = flag.Duration("scale.wrk", 10*time.Second,
	"BenchmarkScale: also load each path from a second process, wrk -t2 -c32 for this long (Debian's wrk; make bench-scale installs it); 0: not")

// wrk loads url with wrk (a second process: its CPU is not the harness's) as bearer token, 2
// threads over 32 keep-alive connections for d, and returns its latency percentiles and
// throughput. Any answer but a 2xx fails the test.
func wrk(t testing.TB, url, token string, d time.Duration) endpointResult {
	t.Helper()
	r, err := testenv.Wrk(context.Background(), url, 32, d, "Authorization: Bearer "+token)
	if err != nil {
		t.Fatal(err)
	}
	return endpointResult{p50: r.P50, p99: r.P99, rps: r.RPS}
}
