package testenv

import (
	"strings"
	"testing"
	"time"
)

// wrk's report is what the harnesses read: a unit test of the parser on a real report.
func TestParseWrk(t *testing.T) {
	const report = `Running 10s test @ https://127.0.0.1:29443/workflow/progress/AAAAAAAAAA
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    4.62ms  67.45ms   91.78%
    Req/Sec     9.12k     1.01k   11.37k    70.50%
  Latency Distribution
     50%  845.00us
     75%    1.66ms
     90%    5.43ms
     99%   24.61ms
  181420 requests in 10.01s, 71.64MB read
Requests/sec:  18124.86
Transfer/sec:      7.16MB
`
	got, err := ParseWrk(report)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{P50: 845 * time.Microsecond, P99: 24610 * time.Microsecond, RPS: 18124.86}
	if got != want {
		t.Errorf("ParseWrk = %+v, want %+v", got, want)
	}
	if _, err := ParseWrk(strings.Replace(report, "Requests/sec", "Transfer/sec", 1) + "  Non-2xx or 3xx responses: 12\n"); err == nil {
		t.Error("a report with failed requests parsed")
	}
}
