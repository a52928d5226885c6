package scale_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
	"github.com/taskops/workflowtask-operator/pkg/progress"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// The two ways a task's pods report progress.
const (
	// directMode: each pod's reporter writes the task's status on kube-apiserver (a read and a
	// server-side apply per write), as its runner ServiceAccount.
	directMode = "direct"
	// ingestMode: each pod pushes its whole state to the operator's endpoint with a projected
	// token bound to it (--progress-ingest); the operator writes the status within its budget.
	ingestMode = "ingest"
)

var (
	modesFlag     = flag.String("scale.modes", "direct,ingest", "BenchmarkStorm: how the M writers report, in order: direct (each writes the status on kube-apiserver) and/or ingest (each pushes to the operator, --progress-ingest)")
	apfFlag       = flag.String("scale.apf", "false,true", "BenchmarkStorm: without and/or with config/apf installed, for each mode")
	directMaxFlag = flag.Int("scale.direct.max", 10000, "BenchmarkStorm: the largest M the direct mode runs at (larger ones run ingest only)")
	warmupFlag    = flag.Duration("scale.warmup", 5*time.Second, "BenchmarkStorm: how long the writers run before a storm's measurements start (they start spread over one interval)")
	streamsFlag   = flag.Int("scale.streams", 200, "BenchmarkStorm: event streams opened, on as many of the M tasks, for freshness at the endpoint")
	budgetFlag    = flag.Float64("scale.ingest.budget", 50, "BenchmarkStorm: the ingest mode's --progress-write-budget (status writes a second)")
	flushFlag     = flag.Duration("scale.ingest.flush", 10*time.Second, "BenchmarkStorm: the ingest mode's --progress-flush-interval")
	ingestArgs    = flag.String("scale.ingest.args", "", "BenchmarkStorm: more flags for the ingest mode's manager, space-separated (e.g. --progress-auth-cache-ttl=10m)")
)

// writeInterval is the writers' interval (the reporter's default): at most one write or push
// a second each.
const writeInterval = progress.DefaultInterval

// stormTasks are M tasks Processing (their Jobs' pods running on the kwok node), and one more
// (index M) the push → visible probe writes to: what every storm of one M writes to, in each
// mode and APF setting in turn.
type stormTasks struct {
	ns    string
	m     int
	tasks []*workflowv1alpha1.WorkflowTask
	pods  []*corev1.Pod
	// observe receives the harness's watch of the tasks (the running storm's, or nil).
	observe atomic.Pointer[func(*workflowv1alpha1.WorkflowTask, time.Time)]
	// tokens of each task's runner, by mode: for kube-apiserver (direct), and for the ingest
	// audience bound to the task's pod (ingest); requested once, valid for an hour.
	tokens map[string][]string
}

func newStormTasks(ctx context.Context, t testing.TB, m int) *stormTasks {
	t.Helper()
	s := &stormTasks{ns: newNamespace(t, fmt.Sprintf("storm-%d-%s", m, runID)), m: m, tokens: map[string][]string{}}
	createTasks(t, s.ns, m+1)
	allProcessing(ctx, t, s.ns, m+1, func(task *workflowv1alpha1.WorkflowTask, at time.Time) {
		if f := s.observe.Load(); f != nil {
			(*f)(task, at)
		}
	})
	var tasks workflowv1alpha1.WorkflowTaskList
	if err := admin.List(ctx, &tasks, client.InNamespace(s.ns)); err != nil {
		t.Fatal(err)
	}
	s.tasks = make([]*workflowv1alpha1.WorkflowTask, m+1)
	for i := range tasks.Items {
		var n int
		if _, err := fmt.Sscanf(tasks.Items[i].Name, "t-%d", &n); err == nil && n <= m {
			s.tasks[n] = &tasks.Items[i]
		}
	}
	// Each task's running pod (kwok runs them): what an ingest token is bound to.
	s.pods = make([]*corev1.Pod, m+1)
	eventually(t, func() error {
		var pods corev1.PodList
		if err := admin.List(ctx, &pods, client.InNamespace(s.ns)); err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			var n int
			if _, err := fmt.Sscanf(p.Labels["job-name"], "t-%d", &n); err != nil || n > m || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			s.pods[n] = p
		}
		for i, p := range s.pods {
			if p == nil || s.tasks[i] == nil {
				return fmt.Errorf("task %d: no running pod yet", i)
			}
		}
		return nil
	}).Should(gomega.Succeed())
	return s
}

// runnerTokens are the tokens the writers of mode use, one per task (the probe's last).
func (s *stormTasks) runnerTokens(t testing.TB, mode string) []string {
	t.Helper()
	if tokens := s.tokens[mode]; tokens != nil {
		return tokens
	}
	cs := kubernetes.NewForConfigOrDie(fastConfig(cluster.Admin))
	tokens := make([]string, s.m+1)
	parallel(t, s.m+1, func(i int) error {
		o := kubeauth.TokenOptions{Expiration: time.Hour}
		if mode == ingestMode {
			o.Audiences, o.BoundTo = []string{ingest.Audience}, kubeauth.BoundToPod(s.pods[i])
		}
		var err error
		tokens[i], err = kubeauth.Token(context.Background(), cs, s.ns, taskName(i)+"-runner", o)
		return err
	})
	s.tokens[mode] = tokens
	return tokens
}

// writers start a reporter (the library) of mode for each task (the probe's last), not yet
// writing: in direct mode with the task's runner's token for kube-apiserver, in ingest mode
// pushing with the runner's token bound to the task's pod, over a connection of its own as a
// pod's, verifying the endpoint with the CA bundle the operator publishes. An ingest storm's
// writers are new writers of the pod (named after the storm, as a new process's would be):
// the writers of an earlier storm on the same tasks finished with their final values, which
// stay. (The same name would make the new writer's first push drop the type "final" its
// predecessor pushed — see docs/benchmarks.md on what that does to a status that a direct
// writer wrote too.)
func (s *stormTasks) writers(t testing.TB, mode string, storm int64) []*progress.Reporter {
	t.Helper()
	tokens := s.runnerTokens(t, mode)
	out := make([]*progress.Reporter, s.m+1)
	var ca []byte
	if mode == ingestMode {
		ca = endpointCA(t)
	}
	// The endpoint's certificate names localhost, not 127.0.0.1.
	base := strings.Replace(manager.ProgressURL, "127.0.0.1", "localhost", 1)
	logFile, err := os.OpenFile(filepath.Join(logDir, fmt.Sprintf("writers-%d-%s-%d.log", s.m, mode, storm)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logFile.Close() })
	var logMu sync.Mutex
	parallel(t, s.m+1, func(i int) error {
		log := funcr.New(func(prefix, args string) { // the reporters' failures, into logDir
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintln(logFile, time.Now().Format(time.RFC3339Nano), taskName(i), prefix, args)
		}, funcr.Options{})
		o := progress.Options{Namespace: s.ns, Task: taskName(i), FieldManager: "workflowtask-progress/scale-" + taskName(i), UID: s.tasks[i].UID, Logger: log}
		if mode == ingestMode {
			o.FieldManager += fmt.Sprintf("/%d", storm)
			o.Ingest = &progress.IngestTarget{URL: base + ingest.Path(s.ns, taskName(i)), CAData: ca, Token: tokens[i]}
		} else {
			o.Config = fastConfig(cluster.TokenConfig(tokens[i]))
		}
		var err error
		out[i], err = progress.New(o)
		return err
	})
	return out
}

// endpointCA is the CA bundle the operator publishes (in its APIService), PEM.
func endpointCA(t testing.TB) []byte {
	t.Helper()
	out, err := cluster.Kubectl(context.Background(), "get", "apiservice", "v1alpha1.progress.taskops.dev", "-o", "jsonpath={.spec.caBundle}")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		t.Fatal("the APIService's caBundle holds no certificate")
	}
	return pem
}

// parallel calls f for 0..n-1 from 16 goroutines; an error fails the test.
func parallel(t testing.TB, n int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// stormManagerArgs run the manager for a storm of mode: the event streams' and connections'
// bounds raised for the harness (every writer and stream connects from 127.0.0.1, where pods
// would each have their own address), and ingest on or off.
func stormManagerArgs(mode string) []string {
	conns := *streamsFlag + 4096
	for _, m := range ints(*writersFlag) {
		conns = max(conns, m+*streamsFlag+4096)
	}
	args := []string{
		fmt.Sprintf("--progress-max-connections=%d", conns), fmt.Sprintf("--progress-max-connections-per-address=%d", conns),
		fmt.Sprintf("--progress-max-streams=%d", *streamsFlag+64), fmt.Sprintf("--progress-max-streams-per-user=%d", *streamsFlag+8),
	}
	if mode == ingestMode {
		args = append(args, "--progress-ingest", fmt.Sprintf("--progress-write-budget=%g", *budgetFlag),
			"--progress-flush-interval="+flushFlag.String())
		args = append(args, strings.Fields(*ingestArgs)...)
	}
	return args
}

// stormResult is what one storm of m writers measured.
type stormResult struct {
	m       int
	mode    string
	apf     bool
	elapsed time.Duration // the measured window
	// kube-apiserver: progress writes (the reporters' applies, or the operator's flushes), the
	// controller's status updates, 429s, its CPU.
	writesPerSec, controllerPerSec, throttledPerSec float64
	apiserverCores                                  float64
	applyTook                                       time.Duration // its mean time per progress write
	// Freshness, from a value's set time: in the status (the harness's watch on
	// kube-apiserver), and at the endpoint (event streams on a sample of the tasks).
	statusFreshP50, statusFreshP99     time.Duration
	endpointFreshP50, endpointFreshP99 time.Duration
	endpointFreshSamples               int
	// streamEnds: event streams the endpoint ended (each connected again after 3 s).
	streamEnds int64
	// The control plane's other work: a ServiceAccount listing pods.
	idleP99, stormP99 time.Duration
	otherFailed       int
	// The probe: a write (Flush) until the endpoint's GET shows it, and until an event stream
	// delivers it.
	visibleGetP50, visibleGetP99, visibleStreamP50, visibleStreamP99 time.Duration
	visibleSamples, visibleMissed                                    int
	// The operator: CPU (cores) and the kube-apiserver requests it made meanwhile; its live heap
	// (after a collection) before the writers started and at the end of the window;
	// TokenReviews its endpoint sent from the writers' start to their last value.
	operatorCores, operatorRequestsPerSec float64
	// operatorVerbs: the operator's requests to kube-apiserver by verb, a second, and their mean
	// duration (its status writes are PATCHes, its reads of pods and Jobs GETs, TokenReviews
	// POSTs).
	operatorVerbs          map[string][2]float64
	heapBefore, heapDuring float64
	tokenReviews           float64
	// The writers: their writes or pushes answered OK (a second, in the window); pushed back
	// (429) and failed (over the whole storm, its cold start included).
	writerOKPerSec                float64
	writerThrottled, writerErrors int64
	// coldStart: from the writers' start until each had a write land (coldStartLanded of them
	// when the warm-up gave up); the window starts then.
	coldStart       time.Duration
	coldStartLanded int
	// Every writer's last value in the status, and how long after the writers closed.
	finalsLanded int
	finalsAfter  time.Duration
	// closeErrors are the writers' Close errors; finalsOnlyLive the final values the endpoint
	// shows but the status does not.
	closeErrors    []string
	finalsOnlyLive int
	// operatorExited: the manager process ended during the storm (it lost its lease).
	operatorExited bool
}

func (r stormResult) cpuPerWriter() float64     { return 1e6 * r.operatorCores / float64(r.m) } // µs a second
func (r stormResult) heapPerWriter() float64    { return (r.heapDuring - r.heapBefore) / float64(r.m) }
func (r stormResult) reviewsPerWriter() float64 { return r.tokenReviews / float64(r.m) }

// verbs: the operator's requests by verb, a second and their mean duration.
func (r stormResult) verbs() string {
	var out []string
	for _, verb := range slices.Sorted(maps.Keys(r.operatorVerbs)) {
		v := r.operatorVerbs[verb]
		if math.IsNaN(v[1]) { // (the client's latency histogram is not exported)
			out = append(out, fmt.Sprintf("%s %.1f/s", verb, v[0]))
		} else {
			out = append(out, fmt.Sprintf("%s %.1f/s %.0f ms", verb, v[0], 1000*v[1]))
		}
	}
	return "(" + strings.Join(out, ", ") + ")"
}

func (r stormResult) String() string {
	return fmt.Sprintf("M=%d %s apf=%t: %.1f progress writes/s (+%.1f/s by the controller, %.1f/s refused; %.0f ms each on average), kube-apiserver %.2f cores; "+
		"freshness in the status p50 %.0f ms p99 %.0f ms, at the endpoint p50 %.0f ms p99 %.0f ms (%d events, %d streams ended by the endpoint); probe p99 idle %.1f ms storm %.1f ms (%.1f×, %d failed); "+
		"write → visible at the endpoint p50 %.1f ms p99 %.1f ms, on a stream p50 %.1f ms p99 %.1f ms (%d writes, %d not seen in 30 s); "+
		"operator %.2f cores (%.0f µs/s per writer), %.1f requests/s to kube-apiserver %s, live heap %.1f → %.1f MiB (%.2f KiB per writer), %.0f TokenReviews (%.2f per writer); "+
		"writers %.0f OK/s, throttled %d, errors %d, every writer's first write landed after %s (%d of %d); finals %d/%d after %s; operator exited %t",
		r.m, r.mode, r.apf, r.writesPerSec, r.controllerPerSec, r.throttledPerSec, ms(r.applyTook), r.apiserverCores,
		ms(r.statusFreshP50), ms(r.statusFreshP99), ms(r.endpointFreshP50), ms(r.endpointFreshP99), r.endpointFreshSamples, r.streamEnds,
		ms(r.idleP99), ms(r.stormP99), float64(r.stormP99)/float64(max(r.idleP99, 1)), r.otherFailed,
		ms(r.visibleGetP50), ms(r.visibleGetP99), ms(r.visibleStreamP50), ms(r.visibleStreamP99), r.visibleSamples, r.visibleMissed,
		r.operatorCores, r.cpuPerWriter(), r.operatorRequestsPerSec, r.verbs(), r.heapBefore/(1<<20), r.heapDuring/(1<<20), r.heapPerWriter()/1024,
		r.tokenReviews, r.reviewsPerWriter(), r.writerOKPerSec, r.writerThrottled, r.writerErrors, r.coldStart.Round(time.Millisecond), r.coldStartLanded, r.m, r.finalsLanded, r.m, r.finalsAfter.Round(time.Millisecond), r.operatorExited)
}

// storm runs the M tasks' writers in mode (the manager already started for it, see
// stormManagerArgs), each setting its upload entry every 10 ms (so it writes or pushes at most
// once per interval, 1 s, slower when pushed back), started spread over one interval, for the
// warm-up and then d, and measures over d: kube-apiserver's status writes and CPU, freshness in
// the status and at the endpoint, the control plane's other work (a ServiceAccount listing pods
// every 100 ms) idle and during the storm, the probe's write → visible, the operator's CPU,
// heap and TokenReviews; then every writer sets a final value and closes, and the storm counts
// the final values in the status.
func storm(t testing.TB, s *stormTasks, mode string, apf bool, d time.Duration) stormResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if apf {
		if _, err := cluster.Kubectl(ctx, "apply", "-k", "config/apf"); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = cluster.Kubectl(context.Background(), "delete", "-k", "config/apf") }()
	}
	if manager.Exited() { // it lost its Lease in the storm before: started again
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m := s.m
	r := stormResult{m: m, mode: mode, apf: apf}
	marker := time.Now().UnixMilli() // this storm's final values
	writers := s.writers(t, mode, marker)
	probeWriter, writers := writers[m], writers[:m]
	closedAll := false
	defer func() { // whatever happened: no writer left running
		if !closedAll {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, w := range append(writers, probeWriter) {
				_ = w.Close(closeCtx)
			}
		}
	}()

	// Freshness in the status: each task's new upload values, as the harness's watch sees them.
	var (
		freshMu                    sync.Mutex
		statusFresh, endpointFresh latencies
		from                       atomic.Int64 // values set before are not this storm's
	)
	from.Store(marker)
	lastSeen := make([]atomic.Int64, m+1)
	fresh := func(into *latencies, last *atomic.Int64, value int64, at time.Time) {
		if value < from.Load() || value <= last.Load() {
			return
		}
		last.Store(value)
		freshMu.Lock()
		*into = append(*into, at.Sub(time.UnixMilli(value)))
		freshMu.Unlock()
	}
	observe := func(task *workflowv1alpha1.WorkflowTask, at time.Time) {
		var i int
		if _, err := fmt.Sscanf(task.Name, "t-%d", &i); err != nil || i >= m {
			return
		}
		for _, e := range task.Status.Progress {
			if e.Type == "upload" {
				fresh(&statusFresh, &lastSeen[i], e.Current, at)
			}
		}
	}
	s.observe.Store(&observe)
	defer s.observe.Store(nil)

	// Freshness at the endpoint: event streams on a sample of the tasks, as their owner.
	ownerToken, err := cluster.ProgressToken(ctx, s.ns, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sample := min(*streamsFlag, m)
	var streamEnds atomic.Int64 // streams the endpoint ended (they connect again)
	streamLast := make([]atomic.Int64, sample)
	for i := range sample {
		if err := followStream(ctx, endpointTaskURL(s.tasks[i]), ownerToken, &streamEnds, func(data map[string]progressValue, at time.Time) {
			if v, ok := data["upload"]; ok {
				fresh(&endpointFresh, &streamLast[i], v.Current, at)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}

	// The other client.
	token, err := cluster.Token(ctx, s.ns, owner, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := getter(cluster.Admin.Host+"/api/v1/namespaces/"+s.ns+"/pods?limit=50", token, func([]byte) bool { return true })
	sampleOther := func(until time.Time) latencies {
		var l latencies
		for time.Now().Before(until) {
			t0 := time.Now()
			if err := other(); err != nil { // refused (429) or failed: counted, its time too
				r.otherFailed++
			}
			l = append(l, time.Since(t0))
			time.Sleep(100 * time.Millisecond)
		}
		return l
	}
	// Idle for as long as the storm: a p99 of as many samples (of 5 s, ≈ 50, it was the worst
	// one, and moved 17–69 ms between runs on this shared machine).
	r.idleP99 = sampleOther(time.Now().Add(d)).quantile(0.99)

	// The writers: each sets its upload entry every 10 ms from its start on, the starts spread
	// over one interval (as pods that did not all start in the same millisecond).
	profile := func(when string) string {
		if *profileDir == "" {
			return ""
		}
		return fmt.Sprintf("%s/storm-%d-%s-apf-%t-%s.pprof", *profileDir, m, mode, apf, when)
	}
	heapBefore := operatorLiveHeap(profile("before"))
	mgr0 := operatorMetrics()
	writersStart := time.Now()
	from.Store(writersStart.UnixMilli())
	stop := make(chan struct{})
	var setting sync.WaitGroup
	const shard = 500
	for lo := 0; lo < m; lo += shard {
		hi := min(lo+shard, m)
		setting.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-tick.C:
					for i := lo; i < hi; i++ {
						if now.Sub(writersStart) >= time.Duration(i)*writeInterval/time.Duration(m) {
							writers[i].Set("upload", now.UnixMilli(), 0)
						}
					}
				}
			}
		})
	}
	// The warm-up: at least -scale.warmup, and until every writer had a write land (a cold
	// start: M new connections and tokens at once, as after a new leader), at most 10 minutes.
	time.Sleep(*warmupFlag)
	for deadline := writersStart.Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if landed := landedOnce(writers); landed == m || time.Now().After(deadline) {
			r.coldStart, r.coldStartLanded = time.Since(writersStart), landed
			break
		}
	}

	// The window.
	w0, cpu0, mgr1, took0, ok0 := apiserverStatusWrites(t), apiserverCPU(t), operatorMetrics(), apiserverApplyTime(t), writesLanded(writers)
	start := time.Now()
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan *visibility, 1)
	go func() {
		probeDone <- probeVisibility(probeCtx, probeWriter, endpointTaskURL(s.tasks[m]), ownerToken)
	}()
	cpuProfiled := make(chan struct{})
	go func() { defer close(cpuProfiled); operatorCPUProfile(profile("cpu"), d-time.Second) }()
	stormLat := sampleOther(start.Add(d))
	stopProbe()
	vis := <-probeDone
	<-cpuProfiled
	w1, cpu1, mgr2, took1, ok1 := apiserverStatusWrites(t), apiserverCPU(t), operatorMetrics(), apiserverApplyTime(t), writesLanded(writers)
	r.elapsed = time.Since(start)
	r.heapDuring = operatorLiveHeap(profile("during"))
	r.heapBefore = heapBefore
	close(stop)
	setting.Wait()
	secs := r.elapsed.Seconds()
	r.stormP99 = stormLat.quantile(0.99)
	r.writerOKPerSec = float64(ok1-ok0) / secs
	r.writesPerSec = (w1.apply - w0.apply) / secs
	r.controllerPerSec = (w1.update - w0.update) / secs
	r.throttledPerSec = (w1.throttled - w0.throttled) / secs
	r.apiserverCores = (cpu1 - cpu0) / secs
	r.applyTook = time.Duration(float64(time.Second) * (took1[0] - took0[0]) / (took1[1] - took0[1]))
	r.operatorCores = (mgr2["process_cpu_seconds_total"] - mgr1["process_cpu_seconds_total"]) / secs
	r.operatorRequestsPerSec = (mgr2["rest_client_requests_total"] - mgr1["rest_client_requests_total"]) / secs
	r.operatorVerbs = map[string][2]float64{}
	for _, verb := range []string{"GET", "PATCH", "POST", "PUT", "DELETE"} {
		n, timed := mgr2["requests/"+verb]-mgr1["requests/"+verb], mgr2["timed/"+verb]-mgr1["timed/"+verb]
		if n > 0 {
			r.operatorVerbs[verb] = [2]float64{n / secs, (mgr2["seconds/"+verb] - mgr1["seconds/"+verb]) / timed}
		}
	}
	r.visibleGetP50, r.visibleGetP99 = vis.get.quantile(0.5), vis.get.quantile(0.99)
	r.visibleStreamP50, r.visibleStreamP99 = vis.stream.quantile(0.5), vis.stream.quantile(0.99)
	r.visibleSamples, r.visibleMissed = vis.writes, vis.missed
	r.streamEnds = streamEnds.Load() + vis.streamEnds.Load()
	from.Store(1 << 62) // the window's freshness only
	freshMu.Lock()
	r.statusFreshP50, r.statusFreshP99 = statusFresh.quantile(0.5), statusFresh.quantile(0.99)
	r.endpointFreshP50, r.endpointFreshP99 = endpointFresh.quantile(0.5), endpointFresh.quantile(0.99)
	r.endpointFreshSamples = len(endpointFresh)
	freshMu.Unlock()

	// The final values: every writer sets one and closes; then they are in the status (direct:
	// written by Close; ingest: written by the operator, urgent, within its budget).
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer closeCancel()
	closing := time.Now()
	var closed sync.WaitGroup
	var closeMu sync.Mutex
	for _, w := range append(writers, probeWriter) {
		closed.Go(func() {
			w.Set("final", marker, 0)
			if err := w.Close(closeCtx); err != nil && w != probeWriter {
				closeMu.Lock()
				r.closeErrors = append(r.closeErrors, err.Error())
				closeMu.Unlock()
			}
		})
	}
	closed.Wait()
	closedAll = true
	for _, w := range writers {
		st := w.Stats()
		r.writerThrottled += st.Throttled
		r.writerErrors += st.Error
	}
	if r.operatorExited = manager.Exited(); r.operatorExited { // measured; started again for what follows
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var missing []*workflowv1alpha1.WorkflowTask // the last count's tasks without their final value
	finals := func() int {
		var list workflowv1alpha1.WorkflowTaskList
		if err := admin.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			t.Fatal(err)
		}
		n := 0
		missing = nil
		for i, task := range list.Items {
			if task.Name == taskName(m) {
				continue
			}
			if slices.ContainsFunc(task.Status.Progress, func(e workflowv1alpha1.ProgressEntry) bool { return e.Type == "final" && e.Current == marker }) {
				n++
			} else {
				missing = append(missing, &list.Items[i])
			}
		}
		return n
	}
	wait := time.Duration(0)
	if mode == ingestMode { // at most the budget a second, and the flusher's tick
		wait = time.Minute + time.Duration(float64(2*m)/(*budgetFlag)*float64(time.Second))
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Second) {
		if r.finalsLanded = finals(); r.finalsLanded >= m || time.Now().After(deadline) {
			break
		}
	}
	r.finalsAfter = time.Since(closing)
	if manager.Exited() { // (it lost its Lease while the final values were being written)
		r.operatorExited = true
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Of the final values missing from the status, those the endpoint shows (taken, not written).
	for _, task := range missing {
		get := getter(endpointTaskURL(task), ownerToken, func(b []byte) bool {
			return strings.Contains(string(b), fmt.Sprintf(`"final":{"total":0,"current":%d`, marker))
		})
		if get() == nil {
			r.finalsOnlyLive++
		}
	}
	if len(r.closeErrors) > 0 || len(missing) > 0 {
		t.Logf("%s apf=%t M=%d: %d Close errors (first: %v); %d final values not in the status, %d of them at the endpoint",
			mode, apf, m, len(r.closeErrors), r.closeErrors[:min(1, len(r.closeErrors))], len(missing), r.finalsOnlyLive)
	}
	r.tokenReviews = operatorMetrics()["workflowtask_door_reviews_total"] - mgr0["workflowtask_door_reviews_total"]
	if r.operatorExited { // another process's counters
		r.tokenReviews = math.NaN()
	}
	return r
}

// checkStorm fails the test where a storm broke a promise, whatever the machine: every writer's
// last value lands in the status, and with ingest kube-apiserver gets at most the write budget
// (a second's burst, the bucket starting full, and a write of slack).
func checkStorm(t testing.TB, r stormResult) {
	t.Helper()
	if r.finalsLanded != r.m {
		t.Errorf("%s apf=%t M=%d: %d of %d final values in the status", r.mode, r.apf, r.m, r.finalsLanded, r.m)
	}
	if r.mode == ingestMode {
		if limit := *budgetFlag*(r.elapsed.Seconds()+1) + 1; r.writesPerSec*r.elapsed.Seconds() > limit {
			t.Errorf("ingest M=%d: %.0f progress writes in %s, over the budget of %g/s (at most %.0f)", r.m,
				r.writesPerSec*r.elapsed.Seconds(), r.elapsed.Round(time.Millisecond), *budgetFlag, limit)
		}
	}
}

// apiserverApplyTime is kube-apiserver's total time answering status applies of tasks
// (seconds) and their count.
func apiserverApplyTime(t testing.TB) [2]float64 {
	t.Helper()
	raw, err := kubernetes.NewForConfigOrDie(cluster.Admin).RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var out [2]float64
	for _, m := range families["apiserver_request_duration_seconds"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["verb"] == "APPLY" && l["resource"] == "workflowtasks" && l["subresource"] == "status" {
			out[0] += m.GetHistogram().GetSampleSum()
			out[1] += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return out
}

// operatorMetrics scrapes the manager's /metrics like managerMetrics; when it does not answer
// (it exited in the storm) every value is NaN, and so is whatever is computed from them.
func operatorMetrics() map[string]float64 {
	nan := map[string]float64{}
	for _, name := range []string{"process_cpu_seconds_total", "rest_client_requests_total", "workflowtask_door_reviews_total", "go_memstats_heap_alloc_bytes"} {
		nan[name] = math.NaN()
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)) //nolint:gosec // loopback
	if err != nil {
		return nan
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nan
	}
	out := map[string]float64{}
	for name := range nan {
		for _, m := range families[name].GetMetric() {
			if name == "workflowtask_door_reviews_total" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == "kind" && l.GetValue() == "token"
			}) {
				continue // TokenReviews only
			}
			out[name] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	// The operator's requests to kube-apiserver by verb: their count and total duration.
	for _, m := range families["rest_client_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "method" {
				out["requests/"+l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	for _, m := range families["rest_client_request_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "verb" {
				out["seconds/"+l.GetValue()] += m.GetHistogram().GetSampleSum()
				out["timed/"+l.GetValue()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// operatorLiveHeap is the manager's heap after a collection (forced by a heap profile, kept in
// file unless it is empty), bytes; NaN when it does not answer.
func operatorLiveHeap(file string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pprofPort)) //nolint:gosec // loopback
	if err != nil {
		return math.NaN()
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if file != "" && os.MkdirAll(filepath.Dir(file), 0o755) == nil {
		_ = os.WriteFile(file, raw, 0o644)
	}
	return operatorMetrics()["go_memstats_heap_alloc_bytes"]
}

// operatorCPUProfile keeps the manager's CPU profile over d in file (nothing when file is
// empty or it does not answer), and returns when it is kept.
func operatorCPUProfile(file string, d time.Duration) {
	if file == "" {
		return
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", pprofPort, max(1, int(d.Seconds())))) //nolint:gosec // loopback
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if raw, err := io.ReadAll(resp.Body); err == nil && resp.StatusCode == http.StatusOK && os.MkdirAll(filepath.Dir(file), 0o755) == nil {
		_ = os.WriteFile(file, raw, 0o644)
	}
}

// endpointTaskURL is the task's progress at the endpoint.
func endpointTaskURL(task *workflowv1alpha1.WorkflowTask) string {
	return manager.ProgressURL + "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
}

// progressValue is an entry as the endpoint answers it.
type progressValue struct {
	Current, Total int64
}

// streamClient opens event streams (each its own HTTP/1.1 connection, as a browser tab's).
var streamClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxConnsPerHost: 0}} //nolint:gosec // loopback measurement

// followStream follows url's event stream as token's holder until ctx ends, as a browser's
// EventSource does: when the server ends the stream it connects again after the stream's retry
// delay (3 s), counting the end in ends. It calls onEvent with each event's entries and its
// arrival. The first connection's failure is returned.
func followStream(ctx context.Context, url, token string, ends *atomic.Int64, onEvent func(map[string]progressValue, time.Time)) error {
	body, err := connectStream(ctx, url, token)
	if err != nil {
		return err
	}
	go func() {
		for {
			readStream(body, onEvent)
			_ = body.Close()
			if ctx.Err() != nil {
				return
			}
			ends.Add(1)
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(3 * time.Second):
				}
				if body, err = connectStream(ctx, url, token); err == nil {
					break
				}
			}
		}
	}()
	return nil
}

func connectStream(ctx context.Context, url, token string) (io.ReadCloser, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := streamClient.Do(req)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("GET %s: no event stream (%d %s)", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.Body, nil
}

// readStream reads events until the stream ends.
func readStream(body io.Reader, onEvent func(map[string]progressValue, time.Time)) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		at := time.Now()
		var b struct {
			Data map[string]progressValue `json:"data"`
		}
		if json.Unmarshal([]byte(data), &b) == nil {
			onEvent(b.Data, at)
		}
	}
}

// visibility is what the probe measured.
type visibility struct {
	get, stream    latencies
	writes, missed int
	streamEnds     atomic.Int64
}

// writesLanded is the writers' writes landed so far.
func writesLanded(writers []*progress.Reporter) int64 {
	var n int64
	for _, w := range writers {
		n += w.Stats().OK
	}
	return n
}

// landedOnce counts the writers that had a write land.
func landedOnce(writers []*progress.Reporter) int {
	n := 0
	for _, w := range writers {
		if w.Stats().OK > 0 {
			n++
		}
	}
	return n
}

// probePace is the probe's least time between two writes: within a pod's push budget (2 a
// second; a probe pushing faster is pushed back like any pod, and measures its 429s).
const probePace = 600 * time.Millisecond

// probeVisibility writes its task's probe entry (a new value, then Flush) every probePace until
// ctx ends, and measures from the Set until the endpoint's GET shows it (polled every 2 ms for
// 200 ms, then every 20 ms) and until an event stream delivers it; a value neither shows
// within 30 s is missed.
func probeVisibility(ctx context.Context, w *progress.Reporter, url, token string) *visibility {
	var (
		v        visibility
		mu       sync.Mutex
		arrivals = map[int64]time.Time{}
		cond     = make(chan struct{}, 1)
	)
	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	// (Not open when the endpoint is not up: the operator lost its Lease and exited. Then the
	// probe's writes are counted as missed.)
	_ = followStream(streamCtx, url, token, &v.streamEnds, func(data map[string]progressValue, at time.Time) {
		if v, ok := data["probe"]; ok {
			mu.Lock()
			if _, seen := arrivals[v.Current]; !seen {
				arrivals[v.Current] = at
			}
			mu.Unlock()
			select {
			case cond <- struct{}{}:
			default:
			}
		}
	})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback measurement
	shows := func(seq int64) (bool, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var body struct {
			Data map[string]progressValue `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err
		}
		return body.Data["probe"].Current >= seq, nil
	}
	for seq := time.Now().UnixMilli(); ctx.Err() == nil; seq++ {
		t0 := time.Now()
		w.Set("probe", seq, 1<<40)
		flushed := make(chan error, 1)
		go func() {
			fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			flushed <- w.Flush(fctx)
		}()
		v.writes++
		seen := false
		for deadline := t0.Add(30 * time.Second); time.Now().Before(deadline); {
			if ok, err := shows(seq); err == nil && ok { // (an error: the endpoint restarting, say)
				v.get = append(v.get, time.Since(t0))
				seen = true
				break
			}
			if time.Since(t0) < 200*time.Millisecond {
				time.Sleep(2 * time.Millisecond)
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
		for deadline := time.After(time.Until(t0.Add(30 * time.Second))); seen; {
			mu.Lock()
			at, ok := arrivals[seq]
			mu.Unlock()
			if ok {
				v.stream = append(v.stream, at.Sub(t0))
				break
			}
			select {
			case <-cond:
			case <-deadline:
				seen = false
			}
		}
		if !seen {
			v.missed++
		}
		<-flushed
		select { // the next write no sooner than probePace after this one's
		case <-ctx.Done():
		case <-time.After(time.Until(t0.Add(probePace))):
		}
	}
	return &v
}

// BenchmarkStorm measures M writers for each M of -scale.writers, in each mode of -scale.modes
// (direct up to -scale.direct.max) and each APF setting of -scale.apf, one after the other in
// one run, on the same M tasks.
func BenchmarkStorm(b *testing.B) {
	defer func() { // the manager as the other benchmarks run it
		if err := restartManager(context.Background(), nil); err != nil {
			b.Error(err)
		}
	}()
	for _, m := range ints(*writersFlag) {
		b.Run(fmt.Sprintf("M=%d", m), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var modes []string
			for _, mode := range strings.Split(*modesFlag, ",") {
				switch mode = strings.TrimSpace(mode); {
				case mode != directMode && mode != ingestMode:
					b.Fatalf("-scale.modes: %q is neither %s nor %s", mode, directMode, ingestMode)
				case mode == directMode && m > *directMaxFlag:
					b.Logf("M=%d: direct mode not run (-scale.direct.max=%d)", m, *directMaxFlag)
				default:
					modes = append(modes, mode)
				}
			}
			if len(modes) == 0 {
				return
			}
			// The tasks are made by the manager of the first mode (in direct mode their runners
			// get the RBAC to write the status; ingest mode leaves it to them).
			if err := restartManager(ctx, stormManagerArgs(modes[0])); err != nil {
				b.Fatal(err)
			}
			s := newStormTasks(ctx, b, m)
			for _, mode := range modes {
				b.Run(mode, func(b *testing.B) {
					if err := restartManager(ctx, stormManagerArgs(mode)); err != nil {
						b.Fatal(err)
					}
					for _, apf := range bools(*apfFlag) {
						b.Run(fmt.Sprintf("apf=%t", apf), func(b *testing.B) {
							for range b.N {
								r := storm(b, s, mode, apf, *stormFlag)
								b.Log(r)
								reportStorm(b, r)
								checkStorm(b, r)
							}
						})
					}
				})
			}
		})
	}
}

func reportStorm(b *testing.B, r stormResult) {
	b.ReportMetric(r.writesPerSec, "writes/s")
	b.ReportMetric(r.controllerPerSec, "controller-writes/s")
	b.ReportMetric(r.throttledPerSec, "429/s")
	b.ReportMetric(r.apiserverCores, "apiserver-cores")
	b.ReportMetric(ms(r.statusFreshP50), "status-fresh-p50-ms")
	b.ReportMetric(ms(r.statusFreshP99), "status-fresh-p99-ms")
	b.ReportMetric(ms(r.endpointFreshP50), "endpoint-fresh-p50-ms")
	b.ReportMetric(ms(r.endpointFreshP99), "endpoint-fresh-p99-ms")
	b.ReportMetric(ms(r.idleP99), "probe-idle-p99-ms")
	b.ReportMetric(ms(r.stormP99), "probe-storm-p99-ms")
	b.ReportMetric(ms(r.visibleGetP50), "visible-get-p50-ms")
	b.ReportMetric(ms(r.visibleGetP99), "visible-get-p99-ms")
	b.ReportMetric(ms(r.visibleStreamP50), "visible-stream-p50-ms")
	b.ReportMetric(ms(r.visibleStreamP99), "visible-stream-p99-ms")
	b.ReportMetric(r.operatorCores, "operator-cores")
	b.ReportMetric(r.cpuPerWriter(), "operator-cpu-µs/s/writer")
	b.ReportMetric(r.heapPerWriter(), "operator-heap-B/writer")
	b.ReportMetric(r.operatorRequestsPerSec, "operator-requests/s")
	b.ReportMetric(r.reviewsPerWriter(), "tokenreviews/writer")
	b.ReportMetric(float64(r.finalsLanded)/float64(r.m), "finals-landed")
	b.ReportMetric(r.finalsAfter.Seconds(), "s-to-finals")
	b.ReportMetric(r.writerOKPerSec, "writer-ok/s")
	b.ReportMetric(r.coldStart.Seconds(), "s-to-every-writer-landed")
	b.ReportMetric(float64(r.writerThrottled), "writer-429s")
	b.ReportMetric(float64(btoi(r.operatorExited)), "operator-lost-lease")
}

// bools parses a comma-separated list of booleans.
func bools(s string) []bool {
	var out []bool
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "true":
			out = append(out, true)
		case "false":
			out = append(out, false)
		}
	}
	return slices.Compact(out)
}
