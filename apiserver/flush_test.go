package apiserver

import "testing"

// The flusher keeps enough writes in flight to spend its budget at 250 ms a write, never
// fewer than four.
func TestFlushWorkers(t *testing.T) {
	for budget, want := range map[float64]int{0.5: 4, 10: 4, 16: 4, 17: 5, 50: 13, 200: 50} {
		if got := flushWorkers(budget); got != want {
			t.Errorf("flushWorkers(%g) = %d, want %d", budget, got, want)
		}
	}
}
