package scale_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

var (
	costRound   = flag.Duration("scale.cost.round", 10*time.Second, "BenchmarkStatusWrite: how long each round of writes to one kind lasts")
	costRounds  = flag.Int("scale.cost.rounds", 3, "BenchmarkStatusWrite: rounds per kind (alternating)")
	costObjects = flag.Int("scale.cost.objects", 50, "BenchmarkStatusWrite: objects of each kind written to")
)

// The minimal CRD a WorkflowTask status write is compared with: the same status schema (copied
// from the installed WorkflowTask CRD), an empty spec, no CEL rules, no printer columns.
var sinkGVR = schema.GroupVersionResource{Group: "scale.taskops.dev", Version: "v1", Resource: "progresssinks"}

const sinkKind = "ProgressSink"

var taskGVR = workflowv1alpha1.GroupVersion.WithResource("workflowtasks")

// writeRound is what one round of status writes to one kind measured.
type writeRound struct {
	writes       int64
	elapsed      time.Duration
	apiserverCPU float64 // kube-apiserver CPU seconds during the round
}

func (r writeRound) perSec() float64 { return float64(r.writes) / r.elapsed.Seconds() }

// cpuPerWrite is kube-apiserver CPU time per write, in milliseconds.
func (r writeRound) cpuPerWrite() float64 { return 1000 * r.apiserverCPU / float64(r.writes) }

// writeCost is the side-by-side result: rounds of each kind, alternating, in one run.
type writeCost struct {
	task, sink []writeRound
}

func total(rs []writeRound) writeRound {
	var t writeRound
	for _, r := range rs {
		t.writes += r.writes
		t.elapsed += r.elapsed
		t.apiserverCPU += r.apiserverCPU
	}
	return t
}

// measureWriteCost writes status.progress to n WorkflowTasks (Processing, with their Jobs; the
// manager watching) and to n objects of the minimal CRD (a watch open on them too, as an
// operator of that kind would have), the same server-side apply body, one field manager per
// object, from concurrency goroutines as admin, for rounds alternating task, sink, task, ….
// Each round counts the writes kube-apiserver answered and the CPU it spent meanwhile.
func measureWriteCost(t testing.TB, n, concurrency, rounds int, round time.Duration, profileDir string) writeCost {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace(t, "cost-"+runID)
	createTasks(t, ns, n)
	allProcessing(ctx, t, ns, n, nil)
	installSink(t)
	dyn := dynamic.NewForConfigOrDie(fastConfig(cluster.Admin))
	for i := range n {
		task, err := dyn.Resource(taskGVR).Namespace(ns).Get(ctx, taskName(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sink := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": sinkGVR.GroupVersion().String(), "kind": sinkKind,
			"metadata": map[string]any{"name": taskName(i), "namespace": ns, "labels": task.GetLabels()},
			"spec":     map[string]any{},
		}}
		created, err := dyn.Resource(sinkGVR).Namespace(ns).Create(ctx, sink, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Object["status"] = task.Object["status"] // the same status to start from
		if _, err := dyn.Resource(sinkGVR).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	watchSinks(ctx, t, dyn, ns)

	var seq atomic.Int64
	runRound := func(gvr schema.GroupVersionResource, kind string, d time.Duration, profile string) writeRound {
		stop := make(chan struct{})
		var writes atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		cpu0 := apiserverCPU(t)
		start := time.Now()
		for w := range concurrency {
			wg.Go(func() {
				for i := w; ; i = (i + concurrency) % n {
					select {
					case <-stop:
						return
					default:
					}
					body, _ := json.Marshal(map[string]any{
						"apiVersion": gvr.GroupVersion().String(), "kind": kind,
						"metadata": map[string]any{"name": taskName(i), "namespace": ns},
						"status": map[string]any{"progress": []any{map[string]any{
							"type": "upload", "current": seq.Add(1), "total": 1 << 40,
							"updateTime": metav1.NewMicroTime(time.Now()).UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
						}}},
					})
					_, err := dyn.Resource(gvr).Namespace(ns).Patch(ctx, taskName(i), types.ApplyPatchType, body,
						metav1.PatchOptions{FieldManager: "workflowtask-progress/cost-" + taskName(i), Force: ptr.To(true)}, "status")
					if err != nil {
						failed.Store(&err)
						return
					}
					writes.Add(1)
				}
			})
		}
		if profile != "" {
			keepProfile(t, profile, d)
		} else {
			time.Sleep(d)
		}
		close(stop)
		wg.Wait()
		r := writeRound{writes: writes.Load(), elapsed: time.Since(start), apiserverCPU: apiserverCPU(t) - cpu0}
		if e := failed.Load(); e != nil {
			t.Fatalf("%s status write: %v", kind, *e)
		}
		return r
	}
	// Warm both paths (caches, connections), then alternate.
	runRound(taskGVR, "WorkflowTask", round/4, "")
	runRound(sinkGVR, sinkKind, round/4, "")
	var c writeCost
	for r := range rounds {
		profile := func(name string) string {
			if profileDir == "" || r != 0 {
				return ""
			}
			return filepath.Join(profileDir, name+".pprof")
		}
		c.task = append(c.task, runRound(taskGVR, "WorkflowTask", round, profile("workflowtask")))
		c.sink = append(c.sink, runRound(sinkGVR, sinkKind, round, profile("minimal")))
	}
	return c
}

// installSink creates the minimal CRD (once per cluster) from the installed WorkflowTask CRD's
// status schema.
func installSink(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	cs := apiextensionsclient.NewForConfigOrDie(cluster.Admin)
	wt, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "workflowtasks."+workflowv1alpha1.GroupVersion.Group, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := wt.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"]
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: sinkGVR.Resource + "." + sinkGVR.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: sinkGVR.Group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: sinkGVR.Resource, Kind: sinkKind, ListKind: sinkKind + "List"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: sinkGVR.Version, Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": {Type: "string"}, "kind": {Type: "string"}, "metadata": {Type: "object"},
						"spec":   {Type: "object"},
						"status": status,
					},
				}},
			}},
		},
	}
	if _, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cluster.Admin)
	eventually(t, func() error {
		_, err := dyn.Resource(sinkGVR).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	}).Should(gomega.Succeed())
}

// watchSinks keeps a watch open on the namespace's sinks until ctx ends, reading every event
// (the manager watches the tasks the same way).
func watchSinks(ctx context.Context, t testing.TB, dyn dynamic.Interface, ns string) {
	t.Helper()
	list, err := dyn.Resource(sinkGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := list.GetResourceVersion()
	go func() {
		for ctx.Err() == nil {
			w, err := dyn.Resource(sinkGVR).Namespace(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				if o, ok := ev.Object.(*unstructured.Unstructured); ok {
					rv = o.GetResourceVersion()
				}
			}
		}
	}()
}

// apiserverCPU is kube-apiserver's process CPU time so far, in seconds.
func apiserverCPU(t testing.TB) float64 {
	t.Helper()
	raw, err := kubernetes.NewForConfigOrDie(cluster.Admin).RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return metrics(t, strings.NewReader(string(raw)), func(name string, _ map[string]string) bool {
		return name == "process_cpu_seconds_total"
	})["process_cpu_seconds_total"]
}

// keepProfile records kube-apiserver's CPU profile for d into file.
func keepProfile(t testing.TB, file string, d time.Duration) {
	t.Helper()
	raw, err := kubernetes.NewForConfigOrDie(cluster.Admin).RESTClient().Get().AbsPath("/debug/pprof/profile").
		Param("seconds", fmt.Sprint(int(d.Seconds()))).Timeout(d + time.Minute).DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	keepFile(t, file, raw)
}

// BenchmarkStatusWrite compares a WorkflowTask status write with the same write to the minimal
// CRD, side by side in one run (run once: -benchtime 1x).
func BenchmarkStatusWrite(b *testing.B) {
	for range b.N {
		c := measureWriteCost(b, *costObjects, 16, *costRounds, *costRound, *profileDir)
		task, sink := total(c.task), total(c.sink)
		for i := range c.task {
			b.Logf("round %d: WorkflowTask %.0f writes/s, %.2f ms CPU/write | minimal %.0f writes/s, %.2f ms CPU/write",
				i+1, c.task[i].perSec(), c.task[i].cpuPerWrite(), c.sink[i].perSec(), c.sink[i].cpuPerWrite())
		}
		b.ReportMetric(task.perSec(), "task-writes/s")
		b.ReportMetric(sink.perSec(), "minimal-writes/s")
		b.ReportMetric(task.cpuPerWrite(), "task-cpu-ms/write")
		b.ReportMetric(sink.cpuPerWrite(), "minimal-cpu-ms/write")
		b.ReportMetric(task.cpuPerWrite()/sink.cpuPerWrite(), "cpu-ratio")
		b.ReportMetric(sink.perSec()/task.perSec(), "throughput-ratio")
	}
}
