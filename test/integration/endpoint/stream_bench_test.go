package endpoint_test

import (
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

var benchRuns int

// BenchmarkStreams: 1,000 event streams follow one task (each its own HTTPS connection, one
// owner, on loopback); per iteration the task's progress changes once, and the time until each
// stream has the new event is recorded. It reports p50/p99/max over all streams and changes, and
// the process's heap per open stream (client and server in this one process: an upper bound
// for the endpoint's own share).
//
//	go test -run '^$' -bench Streams -benchtime 5x ./test/integration/endpoint   (make bench)
func BenchmarkStreams(b *testing.B) {
	const streams = 1000
	url := startEndpoint(b, func(o *apiserver.Options) {
		o.MaxStreams, o.MaxStreamsPerUser = 2*streams, 2*streams
		o.MaxConnections, o.MaxConnectionsPerAddress = 2*streams, 2*streams // one client address
	})
	owner := newSAUser(b, "bench-streams", "alice")
	benchRuns++ // the framework calls a benchmark more than once
	task := createTaskWithProgress(b, testutil.MakeTask(fmt.Sprintf("followed-%d", benchRuns), "bench-streams").Owner(owner.name), entry("upload", 0, 1_000_000, ""))
	path := url + "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	client := clientFrom(net.IPv4(127, 0, 7, 1))

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	all := make([]*sse, streams)
	for i := range all {
		s, body := openStream(b, client, path, owner.token)
		if s == nil {
			b.Fatalf("stream %d refused: %s", i, body)
		}
		s.nextData(b)
		all[i] = s
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perStream := (int64(after.HeapInuse) - int64(before.HeapInuse)) / streams

	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		setProgress(b, task, entry("upload", int64(i+1), 1_000_000, ""))
		got := make([]time.Duration, streams)
		var wg sync.WaitGroup
		for j, s := range all {
			wg.Go(func() {
				s.nextData(b)
				got[j] = time.Since(start)
			})
		}
		wg.Wait()
		lat = append(lat, got...)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p int) time.Duration { return lat[(len(lat)-1)*p/100].Round(100 * time.Microsecond) }
	b.ReportMetric(float64(pct(50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(perStream), "heap-B/stream")
	b.Logf("%d streams, %d changes: all received a change within p50 %s, p99 %s, max %s (from the status write); heap %s per open stream (client and server)",
		streams, b.N, pct(50), pct(99), lat[len(lat)-1].Round(100*time.Microsecond), fmt.Sprintf("%.1f KiB", float64(perStream)/1024))
}
