package scale_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers/notify"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

var (
	notifyTasksFlag  = flag.String("scale.notify.tasks", "1000", "BenchmarkNotify: the numbers of tasks that finish, in order")
	notifySpreadFlag = flag.Duration("scale.notify.spread", time.Minute, "BenchmarkNotify: the time over which they finish")
)

// notifyResult is one round of measureNotify: n tasks finishing over a spread, the operator with
// a sink or without.
type notifyResult struct {
	n    int
	sink bool
	// window is from the first task's end to the last task Completed (and, with a sink, its
	// last announcement delivered), plus settle.
	window time.Duration
	// reconciles and requests are the controller's reconciles and the manager's API requests
	// in the window, per task.
	reconcilesPerTask, requestsPerTask float64
	// reconcileRate is reconciles per second in the window.
	reconcileRate float64
	// endToEnd is from a pod's end (the harness marks it complete) to the sink taking the
	// task's succeeded announcement; afterAnnounced from the announcement (the CloudEvent's
	// time) to the sink taking it.
	endToEnd, afterAnnounced latencies
	// distinct and received count the succeeded announcements: distinct ids, and events.
	distinct, received int
}

func (r notifyResult) String() string {
	s := fmt.Sprintf("N=%d finishing, sink=%t: %.1f reconciles/task (%.1f/s), %.1f manager requests/task over %s",
		r.n, r.sink, r.reconcilesPerTask, r.reconcileRate, r.requestsPerTask, r.window.Round(time.Millisecond))
	if r.sink {
		s += fmt.Sprintf("; delivery of succeeded: pod end → sink p50 %s p99 %s, announcement → sink p50 %s p99 %s; %d distinct, %d received",
			r.endToEnd.quantile(0.5).Round(time.Millisecond), r.endToEnd.quantile(0.99).Round(time.Millisecond),
			r.afterAnnounced.quantile(0.5).Round(time.Millisecond), r.afterAnnounced.quantile(0.99).Round(time.Millisecond), r.distinct, r.received)
	}
	return s
}

// measureNotify runs n tasks to Processing, then ends their pods evenly over spread, the
// operator running with a sink (a receiver of the harness's, on loopback) or without, and
// measures what the controller did meanwhile and how soon each task's end reached the sink.
func measureNotify(t testing.TB, n int, spread time.Duration, withSink bool) notifyResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := notifyResult{n: n, sink: withSink}
	var args []string
	var rcv *testenv.EventReceiver
	if withSink {
		rcv = testenv.NewEventReceiver(t, testenv.Accept)
		args = []string{"--notify-sink=" + rcv.URL}
	}
	if err := restartManager(ctx, args); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, fmt.Sprintf("notify-%d-%t-%s", n, withSink, runID))
	defer removeNamespace(t, ns) // the next round starts without these tasks, pods and Jobs
	createTasks(t, ns, n)
	var mu sync.Mutex
	completed := map[string]time.Time{}
	allProcessing(ctx, t, ns, n, func(task *workflowv1alpha1.WorkflowTask, at time.Time) {
		if task.Status.Phase == workflowv1alpha1.TaskPhaseCompleted {
			mu.Lock()
			if _, ok := completed[task.Name]; !ok {
				completed[task.Name] = at
			}
			mu.Unlock()
		}
	})
	pods := &corev1.PodList{}
	if err := admin.List(ctx, pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	before := managerMetrics(t)
	start := time.Now()
	ended := map[string]time.Time{} // task → when its pod was marked complete
	complete := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"workflow.taskops.dev/simulate":"complete"}}}`))
	for i, pod := range pods.Items {
		time.Sleep(time.Until(start.Add(time.Duration(i) * spread / time.Duration(len(pods.Items)))))
		ended[pod.Labels["job-name"]] = time.Now()
		if err := admin.Patch(ctx, &pod, complete); err != nil {
			t.Fatal(err)
		}
	}
	waitCount(t, ns+": tasks Completed", func() int64 { mu.Lock(); defer mu.Unlock(); return int64(len(completed)) }, n, 10*time.Minute)
	succeeded := func() []testenv.ReceivedEvent {
		var out []testenv.ReceivedEvent
		for _, ev := range rcv.Received() {
			if strings.HasPrefix(ev.Event.Subject(), ns+"/") && ev.Event.Type() == notify.TypePrefix+notify.Succeeded+".v1" {
				out = append(out, ev)
			}
		}
		return out
	}
	if withSink {
		waitCount(t, ns+": succeeded delivered", func() int64 { return int64(len(succeeded())) }, n, 10*time.Minute)
	}
	const settle = 3 * time.Second // the writes that follow (a finished task's record, once delivered)
	time.Sleep(settle)
	r.window = time.Since(start)
	after := managerMetrics(t)
	reconciles := after["controller_runtime_reconcile_total"] - before["controller_runtime_reconcile_total"]
	r.reconcilesPerTask = reconciles / float64(n)
	r.reconcileRate = reconciles / r.window.Seconds()
	r.requestsPerTask = (after["rest_client_requests_total"] - before["rest_client_requests_total"]) / float64(n)
	if withSink {
		ids := map[string]bool{}
		for _, ev := range succeeded() {
			name := strings.TrimPrefix(ev.Event.Subject(), ns+"/")
			r.endToEnd = append(r.endToEnd, ev.At.Sub(ended[name]))
			r.afterAnnounced = append(r.afterAnnounced, ev.At.Sub(ev.Event.Time()))
			ids[ev.Event.ID()] = true
			var d notify.Data
			if err := json.Unmarshal(ev.Event.Data(), &d); err != nil || d.Name != name {
				t.Errorf("%s: data %s: %v", ev.Event.ID(), ev.Event.Data(), err)
			}
		}
		r.distinct, r.received = len(ids), len(succeeded())
		slices.Sort(r.endToEnd)
		slices.Sort(r.afterAnnounced)
	}
	return r
}

// The notification round on a small scale, in make test: every task's end delivered, once each.
func TestNotifySmoke(t *testing.T) {
	defer func() {
		if err := restartManager(context.Background(), nil); err != nil {
			t.Error(err)
		}
	}()
	const n = 20
	r := measureNotify(t, n, 2*time.Second, true)
	t.Log(r)
	if r.distinct != n || r.received != n {
		t.Errorf("%d tasks succeeded: %d distinct announcements, %d received; want %d, %d", n, r.distinct, r.received, n, n)
	}
	if r.reconcilesPerTask <= 0 || r.requestsPerTask <= 0 {
		t.Errorf("%.1f reconciles, %.1f requests per task while tasks finished", r.reconcilesPerTask, r.requestsPerTask)
	}
}

// BenchmarkNotify: for each N of -scale.notify.tasks, N tasks finish evenly over
// -scale.notify.spread, first with the operator announcing to a sink, then without (run once:
// -benchtime 1x).
func BenchmarkNotify(b *testing.B) {
	defer func() {
		if err := restartManager(context.Background(), nil); err != nil {
			b.Error(err)
		}
	}()
	for _, n := range ints(*notifyTasksFlag) {
		for _, withSink := range []bool{true, false} {
			b.Run(fmt.Sprintf("N=%d/sink=%t", n, withSink), func(b *testing.B) {
				for range b.N {
					r := measureNotify(b, n, *notifySpreadFlag, withSink)
					b.Log(r)
					b.ReportMetric(r.reconcilesPerTask, "reconciles/task")
					b.ReportMetric(r.reconcileRate, "reconciles/s")
					b.ReportMetric(r.requestsPerTask, "requests/task")
					if withSink {
						b.ReportMetric(ms(r.endToEnd.quantile(0.5)), "end-to-sink-p50-ms")
						b.ReportMetric(ms(r.endToEnd.quantile(0.99)), "end-to-sink-p99-ms")
						b.ReportMetric(ms(r.afterAnnounced.quantile(0.5)), "announced-to-sink-p50-ms")
						b.ReportMetric(ms(r.afterAnnounced.quantile(0.99)), "announced-to-sink-p99-ms")
						b.ReportMetric(float64(r.received-r.distinct), "duplicates")
					}
				}
			})
		}
	}
}

// removeNamespace deletes ns and waits until its tasks and pods are gone.
func removeNamespace(t testing.TB, ns string) {
	t.Helper()
	ctx := context.Background()
	if err := admin.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func(g gomega.Gomega) {
		tasks, pods := &workflowv1alpha1.WorkflowTaskList{}, &corev1.PodList{}
		g.Expect(admin.List(ctx, tasks, client.InNamespace(ns))).To(gomega.Succeed())
		g.Expect(admin.List(ctx, pods, client.InNamespace(ns))).To(gomega.Succeed())
		g.Expect(len(tasks.Items) + len(pods.Items)).To(gomega.BeZero())
	}).WithTimeout(10 * time.Minute).Should(gomega.Succeed())
}
