package progressrate

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type obs struct {
	current int64
	after   time.Duration // the update time, after t0
}

func TestEstimator(t *testing.T) {
	for name, c := range map[string]struct {
		total    int64
		samples  []obs
		now      time.Duration // after t0
		rate     float64       // want, within 5 %
		eta      string
		stalled  bool
		rateZero bool
	}{
		"one sample: no rate yet": {total: 100, samples: []obs{{10, 0}}, now: time.Second, rateZero: true, eta: "?"},
		"steady 10/s":             {total: 1000, samples: []obs{{0, 0}, {10, time.Second}, {20, 2 * time.Second}, {30, 3 * time.Second}}, now: 3 * time.Second, rate: 10, eta: "1m37s"},
		"bursty: 50 every 5 s averages 10/s": {total: 1000, samples: []obs{{0, 0}, {50, 5 * time.Second}, {100, 10 * time.Second}, {150, 15 * time.Second}},
			now: 15 * time.Second, rate: 10, eta: "1m25s"},
		"speeding up: the average follows": {total: 10000, samples: []obs{{0, 0}, {10, time.Second}, {1010, 2 * time.Second}}, now: 2 * time.Second, rate: 10 + (1000-10)*(1-math.Exp(-0.1)), eta: ""},
		"stalled: no change for 30 s":      {total: 100, samples: []obs{{0, 0}, {10, time.Second}}, now: 31 * time.Second, stalled: true, eta: "stalled"},
		"finished is not stalled":          {total: 100, samples: []obs{{0, 0}, {100, time.Second}}, now: time.Hour, rate: 100, eta: "0s"},
		"unknown total: a rate, no ETA":    {total: 0, samples: []obs{{0, 0}, {5, time.Second}}, now: time.Second, rate: 5, eta: "?"},
		"value went down: starts over":     {total: 100, samples: []obs{{0, 0}, {50, time.Second}, {10, 2 * time.Second}}, now: 2 * time.Second, rateZero: true, eta: "?"},
		"the same update again: no change": {total: 100, samples: []obs{{0, 0}, {10, time.Second}, {10, time.Second}}, now: time.Second, rate: 10, eta: "9s"},
	} {
		t.Run(name, func(t *testing.T) {
			e := New()
			var est Estimate
			for _, s := range c.samples {
				est = e.Observe("upload", s.current, c.total, t0.Add(s.after), t0.Add(c.now))
			}
			if est.Stalled != c.stalled {
				t.Errorf("stalled %v, want %v", est.Stalled, c.stalled)
			}
			switch {
			case c.rateZero && est.Rate != 0:
				t.Errorf("rate %v, want none", est.Rate)
			case !c.rateZero && !c.stalled && math.Abs(est.Rate-c.rate) > 0.05*c.rate:
				t.Errorf("rate %v, want %v", est.Rate, c.rate)
			}
			if c.eta != "" && ETA(est) != c.eta {
				t.Errorf("ETA %s, want %s", ETA(est), c.eta)
			}
		})
	}
}

// An entry that went away is forgotten: when it comes back it starts over.
func TestForget(t *testing.T) {
	e := New()
	e.Observe("upload_single_0", 0, 100, t0, t0)
	e.Observe("upload_single_0", 50, 100, t0.Add(time.Second), t0.Add(time.Second))
	e.Forget("upload_single_0")
	if est := e.Observe("upload_single_0", 60, 100, t0.Add(2*time.Second), t0.Add(2*time.Second)); est.Rate != 0 || est.ETAKnown {
		t.Errorf("a forgotten entry kept its rate: %+v", est)
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB", math.MaxInt64: "8.0 EiB"} {
		if got := Bytes(in); got != want {
			t.Errorf("Bytes(%d) = %s, want %s", in, got, want)
		}
	}
	for _, c := range []struct {
		cur, total int64
		want       string
	}{{25, 34, "25/34"}, {25, 0, "25/?"}, {0, -1, "0/?"}} {
		if got := Count(c.cur, c.total); got != c.want {
			t.Errorf("Count(%d, %d) = %s, want %s", c.cur, c.total, got, c.want)
		}
	}
	for d, want := range map[time.Duration]string{5 * time.Second: "5s", 65 * time.Second: "1m05s", 2*time.Hour + 3*time.Minute: "2h03m"} {
		if got := ETA(Estimate{ETA: d, ETAKnown: true}); got != want {
			t.Errorf("ETA(%s) = %s, want %s", d, got, want)
		}
	}
}
