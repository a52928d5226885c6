// Package progressrate estimates how fast a progress entry moves and when it will finish, and
// formats progress for people: the rate as an exponentially weighted moving average over the
// entry's successive values and update times (time-aware, so bursty writers average out), the
// ETA from the remaining amount, byte amounts in binary units. It is the arithmetic of the
// kubectl-workflowtask plugin's live view (issue 14), kept apart to be tested on its own.
package progressrate

import (
	"fmt"
	"math"
	"time"
)

// Tau is the averaging time constant: a sample's weight halves in about 0.7·Tau.
const Tau = 10 * time.Second

// StalledAfter is how long without a change makes an entry stalled: no rate, no ETA.
const StalledAfter = 3 * Tau

// Estimate is what is known of one entry's motion.
type Estimate struct {
	// Rate is units per second; 0 until two samples were seen, or when stalled.
	Rate float64
	// ETA is the time left at Rate; known only with a rate and a known total.
	ETA      time.Duration
	ETAKnown bool
	// Stalled: no change for StalledAfter.
	Stalled bool
}

type sample struct {
	current int64
	at      time.Time
	rate    float64
	rated   bool
}

// Estimator follows the entries of one task by type.
type Estimator struct {
	entries map[string]*sample
}

// New returns an empty Estimator.
func New() *Estimator { return &Estimator{entries: map[string]*sample{}} }

// Observe takes an entry's value at its update time and returns the estimate at now. A value
// seen before (the same update time) changes nothing; a value that went down starts over.
func (e *Estimator) Observe(typ string, current, total int64, at, now time.Time) Estimate {
	s, ok := e.entries[typ]
	switch {
	case !ok || current < s.current:
		s = &sample{current: current, at: at}
		e.entries[typ] = s
	case at.After(s.at):
		dt := at.Sub(s.at).Seconds()
		inst := float64(current-s.current) / dt
		if !s.rated {
			s.rate, s.rated = inst, true
		} else {
			alpha := 1 - math.Exp(-dt/Tau.Seconds())
			s.rate += alpha * (inst - s.rate)
		}
		s.current, s.at = current, at
	}
	return s.estimate(total, now)
}

func (s *sample) estimate(total int64, now time.Time) Estimate {
	if now.Sub(s.at) >= StalledAfter && (total == 0 || s.current < total) {
		return Estimate{Stalled: true}
	}
	est := Estimate{Rate: s.rate}
	if s.rated && s.rate > 0 && total > 0 {
		left := float64(total-s.current) / s.rate
		est.ETA, est.ETAKnown = time.Duration(math.Max(left, 0)*float64(time.Second)).Round(time.Second), true
	}
	return est
}

// Forget drops an entry that is gone from the task.
func (e *Estimator) Forget(typ string) { delete(e.entries, typ) }

// Bytes formats a byte amount in binary units: "512 B", "1.5 KiB", "3.0 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Count formats items done: "25/34", or "25/?" while the total is unknown.
func Count(current, total int64) string {
	if total <= 0 {
		return fmt.Sprintf("%d/?", current)
	}
	return fmt.Sprintf("%d/%d", current, total)
}

// ETA formats an estimate's time left: "1m05s", "2h03m", "stalled" or "?".
func ETA(est Estimate) string {
	switch {
	case est.Stalled:
		return "stalled"
	case !est.ETAKnown:
		return "?"
	case est.ETA >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(est.ETA.Hours()), int(est.ETA.Minutes())%60)
	case est.ETA >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(est.ETA.Minutes()), int(est.ETA.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(est.ETA.Seconds()))
}
