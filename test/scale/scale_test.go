package scale_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// tasksResult is what one N-task run measured.
type tasksResult struct {
	n                          int
	toJobs, toProcessing       time.Duration
	requestsPerTask            float64
	heapMiB, rssMiB            float64
	liveHeapMiB                float64 // after a collection
	endpoint, kubeGet, viaAggr endpointResult
	// The same three under wrk, a second process (when asked for).
	wrkEndpoint, wrkKubeGet, wrkViaAggr endpointResult
	resyncServing, resyncAll            time.Duration
}

type endpointResult struct {
	p50, p99 time.Duration
	rps      float64
}

func (e endpointResult) String() string {
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, %.0f req/s", ms(e.p50), ms(e.p99), e.rps)
}

// measureTasks creates n tasks in a namespace of their own and measures: time to every Job and
// to every task Processing, the manager's API requests per task, its memory, the endpoint at n
// beside kube-apiserver's GET and the aggregated path (same client, same request count and
// concurrency, one run; and, when wrkFor is not 0, from wrk for that long each), and a full
// resync (the manager killed and started again).
func measureTasks(t testing.TB, n, requests int, resync bool, wrkFor time.Duration) tasksResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace(t, fmt.Sprintf("tasks-%d-%s", n, runID))
	f := follow(ctx, t, ns, nil)
	before := managerMetrics(t)
	start := time.Now()
	createTasks(t, ns, n)
	r := tasksResult{n: n}
	r.toJobs = waitCount(t, ns+": Jobs", f.nJobs.Load, n, 30*time.Minute).Sub(start)
	r.toProcessing = waitCount(t, ns+": tasks Processing", f.nRunning.Load, n, 30*time.Minute).Sub(start)
	time.Sleep(2 * time.Second) // the last status writes
	after := managerMetrics(t)
	r.requestsPerTask = (after["rest_client_requests_total"] - before["rest_client_requests_total"]) / float64(n)
	r.heapMiB = after["go_memstats_heap_inuse_bytes"] / (1 << 20)
	r.rssMiB = after["process_resident_memory_bytes"] / (1 << 20)
	heapProfile := filepath.Join(t.TempDir(), "heap.pprof")
	if *profileDir != "" {
		heapProfile = filepath.Join(*profileDir, fmt.Sprintf("manager-heap-%d.pprof", n))
		keepObjects(t, ns, filepath.Join(*profileDir, "objects"))
	}
	keepManagerHeap(t, heapProfile) // (after a collection: what is left is live)
	r.liveHeapMiB = managerMetrics(t)["go_memstats_heap_alloc_bytes"] / (1 << 20)

	// One task with progress, read three ways as its owner.
	task := &workflowv1alpha1.WorkflowTask{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: taskName(0)}, task); err != nil {
		t.Fatal(err)
	}
	// The owner's token for kube-apiserver (the two paths through it), and for the endpoint's
	// audience (the endpoint directly, which refuses the other).
	token, err := cluster.Token(ctx, ns, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	endpointToken, err := cluster.ProgressToken(ctx, ns, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rep := runners(t, ns, 1)[0]
	rep.Set("upload", 1, 2)
	if err := rep.Close(ctx); err != nil {
		t.Fatal(err)
	}
	id := task.Status.ID
	hasProgress := func(b []byte) bool { return strings.Contains(string(b), `"upload":{"total":2,"current":1`) }
	isTask := func(b []byte) bool { return strings.Contains(string(b), `"name":"`+taskName(0)+`"`) }
	endpointURL := manager.ProgressURL + "/workflow/progress/" + id
	eventually(t, func() error { return getter(endpointURL, endpointToken, hasProgress)() }).Should(gomega.Succeed())
	kubeGetURL := cluster.Admin.Host + "/apis/workflow.taskops.dev/v1alpha1/namespaces/" + ns + "/workflowtasks/" + taskName(0)
	viaAggrURL := cluster.Admin.Host + "/apis/progress.taskops.dev/v1alpha1/progress/" + id
	for _, c := range []struct {
		into, wrkInto *endpointResult
		url, token    string
		get           func() error
	}{
		{&r.endpoint, &r.wrkEndpoint, endpointURL, endpointToken, getter(endpointURL, endpointToken, hasProgress)},
		{&r.kubeGet, &r.wrkKubeGet, kubeGetURL, token, getter(kubeGetURL, token, isTask)},
		{&r.viaAggr, &r.wrkViaAggr, viaAggrURL, token, getter(viaAggrURL, token, hasProgress)},
	} {
		lat, rps := load(t, requests, 8, c.get)
		*c.into = endpointResult{p50: lat.quantile(0.5), p99: lat.quantile(0.99), rps: rps}
		if wrkFor > 0 {
			*c.wrkInto = wrk(t, c.url, c.token, wrkFor)
		}
	}

	if resync {
		manager.Kill()
		restart := time.Now()
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error { return getter(endpointURL, endpointToken, hasProgress)() }).Should(gomega.Succeed())
		r.resyncServing = time.Since(restart)
		// Caught up: every task of every namespace reconciled once by the new process, and
		// nothing queued.
		var all workflowv1alpha1.WorkflowTaskList
		if err := admin.List(ctx, &all); err != nil {
			t.Fatal(err)
		}
		eventually(t, func(g gomega.Gomega) {
			m := managerMetrics(t)
			g.Expect(m["controller_runtime_reconcile_total"]).To(gomega.BeNumerically(">=", len(all.Items)))
			g.Expect(m["workqueue_depth"]).To(gomega.BeZero())
		}).Should(gomega.Succeed())
		r.resyncAll = time.Since(restart)
	}
	return r
}

// The harness on a small scale, in make test, so that it cannot rot: counts, not durations.
func TestScaleSmoke(t *testing.T) {
	const n, m = 50, 10
	r := measureTasks(t, n, 200, true, 0)
	t.Logf("N=%d: Jobs after %s, Processing after %s, %.1f manager requests per task, heap %.0f MiB (live %.0f), RSS %.0f MiB; "+
		"endpoint %s | kube-apiserver GET %s | aggregated %s; resync: serving after %s, caught up after %s",
		n, r.toJobs.Round(time.Millisecond), r.toProcessing.Round(time.Millisecond), r.requestsPerTask, r.heapMiB, r.liveHeapMiB, r.rssMiB,
		r.endpoint, r.kubeGet, r.viaAggr, r.resyncServing.Round(time.Millisecond), r.resyncAll.Round(time.Millisecond))
	// Each task: one Job, exactly.
	jobs := &batchv1.JobList{}
	if err := admin.List(context.Background(), jobs, client.InNamespace(fmt.Sprintf("tasks-%d-%s", n, runID))); err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != n {
		t.Errorf("%d Jobs for %d tasks", len(jobs.Items), n)
	}
	// Creating a task and bringing it to Processing is a handful of requests (4 creates, a few
	// status writes and reads): a bound that catches a reconcile loop, whatever the machine.
	if r.requestsPerTask < 4 || r.requestsPerTask > 25 {
		t.Errorf("%.1f manager requests per task; want 4..25", r.requestsPerTask)
	}
	cost := measureWriteCost(t, 10, 4, 1, 2*time.Second, "")
	for _, k := range []writeKind{taskKind, minimalKind, bareKind} {
		r := total(cost[k.name])
		t.Logf("status writes to %s: %.0f/s, %.2f ms of kube-apiserver CPU each", k.name, r.perSec(), r.cpuPerWrite())
		if r.writes == 0 || r.apiserverCPU <= 0 {
			t.Errorf("status writes to %s: %d writes, %.2f s of kube-apiserver CPU", k.name, r.writes, r.apiserverCPU)
		}
	}
	// The storm in both modes on the same tasks: direct without and with config/apf, ingest.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := restartManager(ctx, stormManagerArgs(directMode)); err != nil { // the runners get their RBAC
		t.Fatal(err)
	}
	tasks := newStormTasks(ctx, t, m)
	defer func() {
		if err := restartManager(context.Background(), nil); err != nil {
			t.Error(err)
		}
	}()
	for _, c := range []struct {
		mode string
		apf  bool
	}{{directMode, false}, {directMode, true}, {ingestMode, false}} {
		if err := restartManager(ctx, stormManagerArgs(c.mode)); err != nil {
			t.Fatal(err)
		}
		s := storm(t, tasks, c.mode, c.apf, 3*time.Second)
		t.Log(s)
		checkStorm(t, s)
		if s.operatorExited {
			t.Errorf("%s apf=%t: the operator exited during a storm of %d writers", c.mode, c.apf, m)
		}
		if s.endpointFreshSamples == 0 || s.visibleSamples == 0 || s.visibleMissed != 0 {
			t.Errorf("%s apf=%t: %d new values on the event streams; the probe's %d writes, %d not seen", c.mode, c.apf,
				s.endpointFreshSamples, s.visibleSamples, s.visibleMissed)
		}
		switch c.mode {
		case directMode:
			if s.writesPerSec <= 0 {
				t.Errorf("apf=%t: no status write reached kube-apiserver", c.apf)
			}
		case ingestMode:
			// Each pod's token reviewed (at least once), no push failed.
			if s.tokenReviews < float64(m) || s.writerErrors != 0 {
				t.Errorf("ingest: %.0f TokenReviews for %d pods' tokens, %d pushes failed", s.tokenReviews, m, s.writerErrors)
			}
		}
	}
}

// BenchmarkScale measures N tasks for each N of -scale.tasks (run once: -benchtime 1x).
func BenchmarkScale(b *testing.B) {
	for _, n := range ints(*tasksFlag) {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				r := measureTasks(b, n, 2000, true, *wrkFlag)
				b.ReportMetric(r.toJobs.Seconds(), "s-to-jobs")
				b.ReportMetric(r.toProcessing.Seconds(), "s-to-processing")
				b.ReportMetric(r.requestsPerTask, "requests/task")
				b.ReportMetric(r.heapMiB, "heap-MiB")
				b.ReportMetric(r.liveHeapMiB, "live-heap-MiB")
				b.ReportMetric(r.rssMiB, "rss-MiB")
				b.ReportMetric(ms(r.endpoint.p50), "endpoint-p50-ms")
				b.ReportMetric(ms(r.endpoint.p99), "endpoint-p99-ms")
				b.ReportMetric(r.endpoint.rps, "endpoint-req/s")
				b.ReportMetric(ms(r.kubeGet.p50), "kube-get-p50-ms")
				b.ReportMetric(ms(r.kubeGet.p99), "kube-get-p99-ms")
				b.ReportMetric(r.kubeGet.rps, "kube-get-req/s")
				b.ReportMetric(ms(r.viaAggr.p50), "aggregated-p50-ms")
				b.ReportMetric(ms(r.viaAggr.p99), "aggregated-p99-ms")
				b.ReportMetric(r.viaAggr.rps, "aggregated-req/s")
				if *wrkFlag > 0 {
					for _, m := range []struct {
						name string
						r    endpointResult
					}{{"endpoint", r.wrkEndpoint}, {"kube-get", r.wrkKubeGet}, {"aggregated", r.wrkViaAggr}} {
						b.ReportMetric(ms(m.r.p50), "wrk-"+m.name+"-p50-ms")
						b.ReportMetric(ms(m.r.p99), "wrk-"+m.name+"-p99-ms")
						b.ReportMetric(m.r.rps, "wrk-"+m.name+"-req/s")
					}
				}
				b.ReportMetric(r.resyncServing.Seconds(), "s-resync-serving")
				b.ReportMetric(r.resyncAll.Seconds(), "s-resync-caught-up")
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
