package progress

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// The hot path: what a caller pays per update. Run with
//   go test -run '^$' -bench . -benchmem -cpu 1,2 ./pkg/progress
// Allocations must be 0; see also TestHotPathDoesNotAllocate.

func BenchmarkReporterSet(b *testing.B) {
	r := newTestReporter(b, time.Hour)
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		r.Set("upload", i, 1<<40)
	}
}

func BenchmarkEntryAdd(b *testing.B) {
	r := newTestReporter(b, time.Hour)
	e, _ := r.Entry("upload")
	b.ReportAllocs()
	for b.Loop() {
		e.Add(4096)
	}
}

// Many goroutines, each on its own type (upload threads).
func BenchmarkReporterSetParallel(b *testing.B) {
	r := newTestReporter(b, time.Hour)
	var g atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		typ := fmt.Sprintf("upload_single_%d", g.Add(1))
		var i int64
		for pb.Next() {
			i++
			r.Set(typ, i, 1<<40)
		}
	})
}

// Many goroutines adding to one shared counter (bytes read by every thread).
func BenchmarkEntryAddParallelShared(b *testing.B) {
	r := newTestReporter(b, time.Hour)
	e, _ := r.Entry("upload")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e.Add(4096)
		}
	})
}

// A plain atomic counter: the floor the reporter is measured against.
func BenchmarkBaselineAtomicAddParallel(b *testing.B) {
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Add(4096)
		}
	})
}

// Allocation-free is a behaviour, asserted here independent of machine speed.
func TestHotPathDoesNotAllocate(t *testing.T) {
	r := newTestReporter(t, time.Hour)
	e, _ := r.Entry("upload")
	r.Set("upload_count", 0, 10) // create the entry first: creation may allocate
	var i int64
	for name, f := range map[string]func(){
		"Reporter.Set": func() { i++; r.Set("upload_count", i, 10) },
		"Reporter.Add": func() { r.Add("upload_count", 1) },
		"Entry.Set":    func() { i++; e.Set(i, 10) },
		"Entry.Add":    func() { e.Add(1) },
	} {
		if allocs := testing.AllocsPerRun(10000, f); allocs != 0 {
			t.Errorf("%s allocates %.1f times per call", name, allocs)
		}
	}
}
