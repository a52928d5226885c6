package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WrkResult is what wrk --latency reports: the latency percentiles and the throughput.
type WrkResult struct {
	P50, P99 time.Duration
	RPS      float64
}

func (r WrkResult) String() string {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, %.0f req/s", ms(r.P50), ms(r.P99), r.RPS)
}

// Wrk loads url with wrk (Debian's; a second process, so its CPU is not the caller's), 2
// threads over conns keep-alive connections for d, sending header ("Name: value") with each
// request. Any answer but a 2xx is an error.
func Wrk(ctx context.Context, url string, conns int, d time.Duration, header ...string) (WrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	args := []string{"-t2", fmt.Sprintf("-c%d", conns), "-d" + d.String(), "--latency"}
	for _, h := range header {
		args = append(args, "-H", h)
	}
	out, err := exec.CommandContext(ctx, "wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	r, err := ParseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return r, nil
}

var (
	wrkPercentile = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkRate       = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkErrors     = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// ParseWrk reads wrk --latency's report.
func ParseWrk(out string) (WrkResult, error) {
	if m := wrkErrors.FindString(out); m != "" {
		return WrkResult{}, fmt.Errorf("failed requests: %s", strings.TrimSpace(m))
	}
	var r WrkResult
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}
	for _, m := range wrkPercentile.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return r, err
		}
		d := time.Duration(v * float64(unit[m[3]]))
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	m := wrkRate.FindStringSubmatch(out)
	if m == nil || r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("no latency distribution or Requests/sec in wrk's report")
	}
	var err error
	r.RPS, err = strconv.ParseFloat(m[1], 64)
	return r, err
}
