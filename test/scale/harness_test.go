package scale_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// fastConfig is cfg without client-side throttling: the harness must not be the bottleneck.
func fastConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS = -1
	return c
}

// owner is the ServiceAccount that owns the harness's tasks; it reads their progress.
const owner = "alice"

// newNamespace creates ns with the owner's ServiceAccount, and lets the owner read the tasks
// there (for the kube-apiserver GET beside the endpoint) and list pods (the control-plane probe).
func newNamespace(t testing.TB, ns string) string {
	t.Helper()
	ctx := context.Background()
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: owner, Namespace: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{workflowv1alpha1.GroupVersion.Group}, Resources: []string{"workflowtasks"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: owner, Namespace: ns}}},
	} {
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

func ownerName(ns string) string { return "system:serviceaccount:" + ns + ":" + owner }

func taskName(i int) string { return fmt.Sprintf("t-%05d", i) }

// createTasks creates n tasks in ns from 32 goroutines.
func createTasks(t testing.TB, ns string, n int) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				task := testutil.MakeTask(taskName(i), ns).Owner(ownerName(ns)).Obj()
				if err := admin.Create(context.Background(), task); err != nil {
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

// follower counts, from informers of its own on one namespace, the tasks' Jobs and the tasks
// in Processing, and calls onTask for every task it sees change.
type follower struct {
	jobs, processing sync.Map
	nJobs, nRunning  atomic.Int64
	onTask           func(*workflowv1alpha1.WorkflowTask, time.Time)
}

func follow(ctx context.Context, t testing.TB, ns string, onTask func(*workflowv1alpha1.WorkflowTask, time.Time)) *follower {
	t.Helper()
	c, err := cache.New(fastConfig(cluster.Admin), cache.Options{Scheme: testenv.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		t.Fatal(err)
	}
	f := &follower{onTask: onTask}
	jobs, err := c.GetInformer(ctx, &batchv1.Job{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if _, loaded := f.jobs.LoadOrStore(obj.(*batchv1.Job).Name, true); !loaded {
			f.nJobs.Add(1)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	tasks, err := c.GetInformer(ctx, &workflowv1alpha1.WorkflowTask{})
	if err != nil {
		t.Fatal(err)
	}
	seen := func(obj any) {
		task, ok := obj.(*workflowv1alpha1.WorkflowTask)
		if !ok {
			return
		}
		now := time.Now()
		if task.Status.Phase == workflowv1alpha1.TaskPhaseProcessing {
			if _, loaded := f.processing.LoadOrStore(task.Name, true); !loaded {
				f.nRunning.Add(1)
			}
		}
		if f.onTask != nil {
			f.onTask(task, now)
		}
	}
	if _, err := tasks.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: seen, UpdateFunc: func(_, obj any) { seen(obj) }}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the harness's cache did not sync")
	}
	return f
}

// waitCount waits until count() reaches n and returns when that was.
func waitCount(t testing.TB, what string, count func() int64, n int, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for count() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d after %s", what, count(), n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Now()
}

// metrics reads a Prometheus text exposition and sums each family over the series matching
// keep (all when nil).
func metrics(t testing.TB, body io.Reader, keep func(name string, labels map[string]string) bool) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, fam := range families {
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if keep != nil && !keep(name, labels) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				out[name] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] += m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				out[name] += m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// managerMetrics scrapes the manager's /metrics.
func managerMetrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)) //nolint:gosec // loopback
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return metrics(t, resp.Body, func(name string, l map[string]string) bool {
		return !strings.HasPrefix(name, "controller_runtime_reconcile") || l["controller"] == "workflowtask"
	})
}

// statusWrites are kube-apiserver's counts of workflowtasks/status writes: the reporters'
// server-side applies and the controller's updates it answered with success, and the writes it
// refused with 429.
type statusWrites struct{ apply, update, throttled float64 }

// keepManagerHeap records the manager's heap profile (after a GC) into file.
func keepManagerHeap(t testing.TB, file string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pprofPort)) //nolint:gosec // loopback
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the manager's heap profile: %d %v", resp.StatusCode, err)
	}
	keepFile(t, file, raw)
}

// keepObjects writes the first task of ns and the objects the manager caches for it (its Job,
// runner ServiceAccount, Role and RoleBinding), as kube-apiserver serves them, as JSON files
// into dir: what the cache's memory is made of (controllers' BenchmarkCacheMemory reads such
// files).
func keepObjects(t testing.TB, ns, dir string) {
	t.Helper()
	key := client.ObjectKey{Namespace: ns, Name: taskName(0)}
	runner := client.ObjectKey{Namespace: ns, Name: taskName(0) + "-runner"}
	for file, o := range map[string]struct {
		key client.ObjectKey
		obj client.Object
	}{
		"workflowtask.json":   {key, &workflowv1alpha1.WorkflowTask{}},
		"job.json":            {key, &batchv1.Job{}},
		"serviceaccount.json": {runner, &corev1.ServiceAccount{}},
		"role.json":           {runner, &rbacv1.Role{}},
		"rolebinding.json":    {runner, &rbacv1.RoleBinding{}},
	} {
		if err := admin.Get(context.Background(), o.key, o.obj); err != nil {
			t.Fatal(err)
		}
		raw, err := json.MarshalIndent(o.obj, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		keepFile(t, filepath.Join(dir, file), raw)
	}
}

// keepFile writes raw into file, creating its directory.
func keepFile(t testing.TB, file string, raw []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func apiserverStatusWrites(t testing.TB) statusWrites {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(cluster.Admin)
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	count := func(verbs []string, code func(string) bool) float64 {
		return metrics(t, strings.NewReader(string(raw)), func(name string, l map[string]string) bool {
			return name == "apiserver_request_total" && l["resource"] == "workflowtasks" && l["subresource"] == "status" &&
				slices.Contains(verbs, l["verb"]) && code(l["code"])
		})["apiserver_request_total"]
	}
	ok := func(c string) bool { return strings.HasPrefix(c, "2") }
	return statusWrites{
		apply:     count([]string{"APPLY"}, ok),
		update:    count([]string{"UPDATE", "PATCH"}, ok),
		throttled: count([]string{"APPLY", "UPDATE", "PATCH"}, func(c string) bool { return c == "429" }),
	}
}

// latencies is a sample of request durations.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// load sends count requests from concurrency goroutines and returns their latencies and the
// throughput; a failed request fails the test.
func load(t testing.TB, count, concurrency int, do func() error) (latencies, float64) {
	t.Helper()
	var (
		mu   sync.Mutex
		lat  = make(latencies, 0, count)
		next atomic.Int64
		errs atomic.Pointer[error]
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(count) {
				t0 := time.Now()
				if err := do(); err != nil {
					errs.Store(&err)
					return
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if e := errs.Load(); e != nil {
		t.Fatal(*e)
	}
	return lat, float64(len(lat)) / time.Since(start).Seconds()
}

// getter GETs one URL with a bearer token over a keep-alive client (loopback, certificate not
// checked: the harness measures, the tests elsewhere verify).
func getter(url, token string, want func([]byte) bool) func() error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 64}} //nolint:gosec // loopback measurement
	return func() error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !want(b) {
			return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		return nil
	}
}

// runners start a reporter for each of the tasks, as its runner (a real TokenRequest token of
// the task's runner ServiceAccount), the library being what writes.
func runners(t testing.TB, ns string, n int) []*progress.Reporter {
	t.Helper()
	ctx := context.Background()
	out := make([]*progress.Reporter, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				token, err := cluster.Token(ctx, ns, taskName(i)+"-runner", time.Hour)
				if err != nil {
					errs <- err
					return
				}
				r, err := progress.New(progress.Options{Config: fastConfig(cluster.TokenConfig(token)), Namespace: ns, Task: taskName(i),
					FieldManager: "workflowtask-progress/scale-" + taskName(i)})
				if err != nil {
					errs <- err
					return
				}
				out[i] = r
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

// allProcessing waits until every task of ns has its Job and runs, and returns the follower.
func allProcessing(ctx context.Context, t testing.TB, ns string, n int, onTask func(*workflowv1alpha1.WorkflowTask, time.Time)) *follower {
	t.Helper()
	f := follow(ctx, t, ns, onTask)
	waitCount(t, ns+": tasks Processing", f.nRunning.Load, n, 30*time.Minute)
	return f
}

// eventually is gomega's Eventually for a testing.TB.
func eventually(t testing.TB, f any) gomega.AsyncAssertion {
	return gomega.NewWithT(t).Eventually(f)
}
