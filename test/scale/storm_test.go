package scale_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// stormResult is what one storm of m writers measured.
type stormResult struct {
	m                  int
	apf                bool
	writesPerSec       float64 // the reporters' applies
	controllerPerSec   float64 // the controller's status updates meanwhile
	throttledPerSec    float64
	freshP50, freshP99 time.Duration
	idleP99, stormP99  time.Duration
	reporterThrottled  int64
	reporterErrors     int64
	finalsLanded       int
	// operatorExited: the manager process ended during the storm (it lost its lease).
	operatorExited bool
}

// storm runs m tasks whose pods (m reporters, the library, real runner tokens) each update
// progress every 10 ms for d, and measures: status writes per second kube-apiserver answered
// (and refused with 429), freshness (a value set until a watch sees it), the latency of the
// control plane's other work — a ServiceAccount listing pods every 100 ms — idle and during the
// storm, and whether every reporter's final value lands.
func storm(t testing.TB, m int, apf bool, d time.Duration) stormResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if apf {
		if _, err := cluster.Kubectl(ctx, "apply", "-k", "config/apf"); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = cluster.Kubectl(context.Background(), "delete", "-k", "config/apf") }()
	}
	ns := newNamespace(t, fmt.Sprintf("storm-%d-apf-%t-%s", m, apf, runID))
	var (
		freshMu  sync.Mutex
		fresh    latencies
		storming atomic.Bool
	)
	createTasks(t, ns, m)
	allProcessing(ctx, t, ns, m, func(task *workflowv1alpha1.WorkflowTask, at time.Time) {
		if !storming.Load() {
			return
		}
		for _, e := range task.Status.Progress {
			if e.Type == "upload" && e.Current > 0 {
				freshMu.Lock()
				fresh = append(fresh, at.Sub(time.UnixMilli(e.Current)))
				freshMu.Unlock()
			}
		}
	})
	reporters := runners(t, ns, m)

	// The probe: another client's ordinary work, as a ServiceAccount (not exempt from APF).
	token, err := cluster.Token(ctx, ns, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	probe := getter(cluster.Admin.Host+"/api/v1/namespaces/"+ns+"/pods?limit=50", token, func([]byte) bool { return true })
	sample := func(until time.Time) latencies {
		var l latencies
		for time.Now().Before(until) {
			t0 := time.Now()
			if err := probe(); err != nil {
				t.Fatal(err)
			}
			l = append(l, time.Since(t0))
			time.Sleep(100 * time.Millisecond)
		}
		return l
	}
	r := stormResult{m: m, apf: apf}
	r.idleP99 = sample(time.Now().Add(min(d, 5*time.Second))).quantile(0.99)

	w0 := apiserverStatusWrites(t)
	storming.Store(true)
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, rep := range reporters {
		wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					rep.Set("upload", time.Now().UnixMilli(), 0)
				}
			}
		})
	}
	stormLat := sample(start.Add(d))
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	w1 := apiserverStatusWrites(t)
	storming.Store(false)
	r.stormP99 = stormLat.quantile(0.99)
	r.writesPerSec = (w1.apply - w0.apply) / elapsed.Seconds()
	r.controllerPerSec = (w1.update - w0.update) / elapsed.Seconds()
	r.throttledPerSec = (w1.throttled - w0.throttled) / elapsed.Seconds()
	freshMu.Lock()
	r.freshP50, r.freshP99 = fresh.quantile(0.5), fresh.quantile(0.99)
	freshMu.Unlock()

	// The final values: every reporter sets one and closes; count those that landed.
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer closeCancel()
	var closing sync.WaitGroup
	for _, rep := range reporters {
		closing.Go(func() {
			rep.Set("final", 1, 1)
			_ = rep.Close(closeCtx)
		})
	}
	closing.Wait()
	for _, rep := range reporters {
		s := rep.Stats()
		r.reporterThrottled += s.Throttled
		r.reporterErrors += s.Error
	}
	if r.operatorExited = manager.Exited(); r.operatorExited { // measured; started again for what follows
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var list workflowv1alpha1.WorkflowTaskList
	if err := admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, task := range list.Items {
		for _, e := range task.Status.Progress {
			if e.Type == "final" && e.Current == 1 {
				r.finalsLanded++
			}
		}
	}
	return r
}

// BenchmarkStorm measures M writers for each M of -scale.writers, without and with config/apf
// (one after the other in one run).
func BenchmarkStorm(b *testing.B) {
	for _, m := range ints(*writersFlag) {
		for _, apf := range []bool{false, true} {
			b.Run(fmt.Sprintf("M=%d/apf=%t", m, apf), func(b *testing.B) {
				for range b.N {
					s := storm(b, m, apf, *stormFlag)
					b.ReportMetric(s.writesPerSec, "writes/s")
					b.ReportMetric(s.controllerPerSec, "controller-writes/s")
					b.ReportMetric(s.throttledPerSec, "429/s")
					b.ReportMetric(ms(s.freshP50), "fresh-p50-ms")
					b.ReportMetric(ms(s.freshP99), "fresh-p99-ms")
					b.ReportMetric(ms(s.idleP99), "probe-idle-p99-ms")
					b.ReportMetric(ms(s.stormP99), "probe-storm-p99-ms")
					b.ReportMetric(float64(s.finalsLanded)/float64(m), "finals-landed")
					b.ReportMetric(float64(s.reporterThrottled), "reporter-429s")
					b.ReportMetric(float64(btoi(s.operatorExited)), "operator-lost-lease")
				}
			})
		}
	}
}
