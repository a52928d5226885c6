package progress_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// BenchmarkFreshness measures, for each Set, how long until a watch on the task shows a value
// at least that new: the staleness a watcher (kubectl -w, the endpoint's informer) sees.
// Updates come every 10 ms, steadily, so most of them wait for the next write of the interval.
//
//	go test -run '^$' -bench Freshness -benchtime 300x ./test/integration/progress
func BenchmarkFreshness(b *testing.B) {
	for _, interval := range []time.Duration{time.Second, 250 * time.Millisecond} {
		b.Run(fmt.Sprintf("interval=%s", interval), func(b *testing.B) {
			benchmarkFreshness(b, interval)
		})
	}
}

func benchmarkFreshness(b *testing.B, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	task := newTask(b, "fresh")
	wc, err := client.NewWithWatch(adminCfg, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	w, err := wc.Watch(ctx, &workflowv1alpha1.WorkflowTaskList{}, client.InNamespace(task.Namespace))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	r, err := progress.New(progress.Options{Config: runnerConfig(b, task), Namespace: task.Namespace, Task: task.Name, Interval: interval})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = closeWithin(b, r, 10*time.Second) }()

	type seen struct {
		value int64
		at    time.Time
	}
	observed := make(chan seen, 1024)
	go func() {
		for ev := range w.ResultChan() {
			t, ok := ev.Object.(*workflowv1alpha1.WorkflowTask)
			if !ok {
				continue
			}
			for _, p := range t.Status.Progress {
				if p.Type == "upload" {
					observed <- seen{p.Current, time.Now()}
				}
			}
		}
	}()

	setAt := make([]time.Time, b.N+1)
	latencies := make([]time.Duration, 0, b.N)
	next := int64(1) // the oldest set not yet seen
	collect := func(s seen) {
		for ; next <= s.value && next <= int64(b.N); next++ {
			latencies = append(latencies, s.at.Sub(setAt[next]))
		}
	}
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		setAt[i] = time.Now()
		r.Set("upload", int64(i), int64(b.N))
		deadline := time.After(10 * time.Millisecond)
	drain:
		for {
			select {
			case s := <-observed:
				collect(s)
			case <-deadline:
				break drain
			}
		}
	}
	timeout := time.After(interval + 10*time.Second)
	for next <= int64(b.N) {
		select {
		case s := <-observed:
			collect(s)
		case <-timeout:
			b.Fatalf("value %d never seen through the watch", next)
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1.0), "max-ms")
	b.ReportMetric(0, "ns/op")
}
