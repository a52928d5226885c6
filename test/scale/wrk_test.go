package scale_test

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var wrkFlag = flag.Duration("scale.wrk", 10*time.Second,
	"BenchmarkScale: also load each path from a second process, wrk -t2 -c32 for this long (Debian's wrk; make bench-scale installs it); 0: not")

// wrk loads url with wrk (a second process: its CPU is not the harness's) as bearer token, 2
// threads over 32 keep-alive connections for d, and returns its latency percentiles and
// throughput. Any answer but a 2xx fails the test.
func wrk(t testing.TB, url, token string, d time.Duration) endpointResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", "-t2", "-c32", "-d"+d.String(), "--latency",
		"-H", "Authorization: Bearer "+token, url).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	return r
}

var (
	wrkPercentile = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkRate       = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkErrors     = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// parseWrk reads wrk --latency's report.
func parseWrk(out string) (endpointResult, error) {
	if m := wrkErrors.FindString(out); m != "" {
		return endpointResult{}, fmt.Errorf("failed requests: %s", strings.TrimSpace(m))
	}
	var r endpointResult
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}
	for _, m := range wrkPercentile.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return r, err
		}
		d := time.Duration(v * float64(unit[m[3]]))
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	m := wrkRate.FindStringSubmatch(out)
	if m == nil || r.p50 == 0 || r.p99 == 0 {
		return r, fmt.Errorf("no latency distribution or Requests/sec in wrk's report")
	}
	var err error
	r.rps, err = strconv.ParseFloat(m[1], 64)
	return r, err
}

// wrk's report is what the harness reads: a unit test of the parser on a real report.
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
	got, err := parseWrk(report)
	if err != nil {
		t.Fatal(err)
	}
	want := endpointResult{p50: 845 * time.Microsecond, p99: 24610 * time.Microsecond, rps: 18124.86}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk(strings.Replace(report, "Requests/sec", "Transfer/sec", 1) + "  Non-2xx or 3xx responses: 12\n"); err == nil {
		t.Error("a report with failed requests parsed")
	}
}
