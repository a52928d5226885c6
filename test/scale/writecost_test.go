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

// writeKind is a kind whose status writes are measured.
type writeKind struct {
	name string
	gvr  schema.GroupVersionResource
	kind string
	// copySpec: its objects carry the task's labels, annotations and spec (bare ones only a
	// status).
	copySpec bool
}

var taskKind = writeKind{name: "WorkflowTask", gvr: workflowv1alpha1.GroupVersion.WithResource("workflowtasks"), kind: "WorkflowTask"}

// What a WorkflowTask status write is compared with, two minimal CRDs with the same status
// schema (copied from the installed WorkflowTask CRD), a spec without schema, no CEL rules, no
// printer columns, no admission policy:
//   - "minimal": objects with the task's content (labels, annotations, spec, status): what a
//     write costs beyond it is what the WorkflowTask API's definition costs;
//   - "bare": objects with the same status and nothing else: beyond it is also what the task's
//     spec and metadata cost (every write carries and stores the whole object).
var (
	minimalKind = writeKind{name: "minimal", gvr: schema.GroupVersionResource{Group: "scale.taskops.dev", Version: "v1", Resource: "progresssinks"},
		kind: "ProgressSink", copySpec: true}
	bareKind = writeKind{name: "bare", gvr: schema.GroupVersionResource{Group: "scale.taskops.dev", Version: "v1", Resource: "bareprogresssinks"},
		kind: "BareProgressSink"}
)

// writeRound is what one round of status writes to one kind measured.
type writeRound struct {
	writes       int64
	elapsed      time.Duration
	apiserverCPU float64 // kube-apiserver CPU seconds during the round
	// controllerWrites are the manager's status writes meanwhile (its summaries of the progress
	// written), counted in apiserverCPU but not in writes.
	controllerWrites float64
}

func (r writeRound) perSec() float64 { return float64(r.writes) / r.elapsed.Seconds() }

// cpuPerWrite is kube-apiserver CPU time per write, in milliseconds.
func (r writeRound) cpuPerWrite() float64 { return 1000 * r.apiserverCPU / float64(r.writes) }

func total(rs []writeRound) writeRound {
	var t writeRound
	for _, r := range rs {
		t.writes += r.writes
		t.elapsed += r.elapsed
		t.apiserverCPU += r.apiserverCPU
		t.controllerWrites += r.controllerWrites
	}
	return t
}

// measureWriteCost writes status.progress to n WorkflowTasks (Processing, with their Jobs; the
// manager watching) and to n objects of each minimal CRD (a watch open on them too, as an
// operator of that kind would have), the same server-side apply body, one field manager per
// object, from concurrency goroutines as admin, in rounds alternating the kinds. Each round
// counts the writes kube-apiserver answered and the CPU it spent meanwhile. The result has the
// rounds of each kind, keyed by the kind's name.
func measureWriteCost(t testing.TB, n, concurrency, rounds int, round time.Duration, profileDir string) map[string][]writeRound {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace(t, "cost-"+runID)
	createTasks(t, ns, n)
	following, stopFollowing := context.WithCancel(ctx)
	allProcessing(following, t, ns, n, nil)
	stopFollowing() // the manager is the tasks' one watcher while they are written
	dyn := dynamic.NewForConfigOrDie(fastConfig(cluster.Admin))
	tasks := make([]*unstructured.Unstructured, n)
	for i := range n {
		var err error
		if tasks[i], err = dyn.Resource(taskKind.gvr).Namespace(ns).Get(ctx, taskName(i), metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []writeKind{minimalKind, bareKind} {
		installSink(t, k)
		for i, task := range tasks {
			sink := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": k.gvr.GroupVersion().String(), "kind": k.kind,
				"metadata": map[string]any{"name": taskName(i), "namespace": ns},
			}}
			if k.copySpec {
				sink.SetLabels(task.GetLabels())
				sink.SetAnnotations(task.GetAnnotations())
				sink.Object["spec"] = task.Object["spec"]
			}
			created, err := dyn.Resource(k.gvr).Namespace(ns).Create(ctx, sink, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			created.Object["status"] = task.Object["status"] // the same status to start from
			if _, err := dyn.Resource(k.gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		watchAll(ctx, t, dyn, k.gvr, ns)
	}
	kinds := []writeKind{taskKind, minimalKind, bareKind}

	var seq atomic.Int64
	runRound := func(k writeKind, d time.Duration, profile string) writeRound {
		stop := make(chan struct{})
		var writes atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		cpu0, w0 := apiserverCPU(t), apiserverStatusWrites(t)
		start := time.Now()
		for w := range concurrency {
			wg.Go(func() {
				for i := w % n; ; i = (i + concurrency) % n {
					select {
					case <-stop:
						return
					default:
					}
					body, _ := json.Marshal(map[string]any{
						"apiVersion": k.gvr.GroupVersion().String(), "kind": k.kind,
						"metadata": map[string]any{"name": taskName(i), "namespace": ns},
						"status": map[string]any{"progress": []any{map[string]any{
							"type": "upload", "current": seq.Add(1), "total": 1 << 40,
							"updateTime": metav1.NewMicroTime(time.Now()).UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
						}}},
					})
					_, err := dyn.Resource(k.gvr).Namespace(ns).Patch(ctx, taskName(i), types.ApplyPatchType, body,
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
		r := writeRound{writes: writes.Load(), elapsed: time.Since(start), apiserverCPU: apiserverCPU(t) - cpu0,
			controllerWrites: apiserverStatusWrites(t).update - w0.update}
		if e := failed.Load(); e != nil {
			t.Fatalf("%s status write: %v", k.kind, *e)
		}
		return r
	}
	// Warm every path (caches, connections), then alternate.
	for _, k := range kinds {
		runRound(k, round/4, "")
		o, err := dyn.Resource(k.gvr).Namespace(ns).Get(ctx, taskName(0), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		all, _ := json.Marshal(o.Object)
		o.SetManagedFields(nil)
		trimmed, _ := json.Marshal(o.Object)
		t.Logf("%s: an object is %d bytes of JSON (%d without managedFields)", k.name, len(all), len(trimmed))
	}
	out := map[string][]writeRound{}
	for r := range rounds {
		for _, k := range kinds {
			profile := ""
			if profileDir != "" && r == 0 {
				profile = filepath.Join(profileDir, k.name+".pprof")
			}
			out[k.name] = append(out[k.name], runRound(k, round, profile))
		}
	}
	return out
}

// installSink creates a minimal CRD (once per cluster) from the installed WorkflowTask CRD's
// status schema.
func installSink(t testing.TB, k writeKind) {
	t.Helper()
	ctx := context.Background()
	cs := apiextensionsclient.NewForConfigOrDie(cluster.Admin)
	wt, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "workflowtasks."+workflowv1alpha1.GroupVersion.Group, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := wt.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"]
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: k.gvr.Resource + "." + k.gvr.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: k.gvr.Group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: k.gvr.Resource, Kind: k.kind, ListKind: k.kind + "List"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: k.gvr.Version, Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": {Type: "string"}, "kind": {Type: "string"}, "metadata": {Type: "object"},
						"spec":   {Type: "object", XPreserveUnknownFields: ptr.To(true)},
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
		_, err := dyn.Resource(k.gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	}).Should(gomega.Succeed())
}

// watchAll keeps a watch open on the namespace's objects of gvr until ctx ends, reading every
// event (the manager watches the tasks the same way).
func watchAll(ctx context.Context, t testing.TB, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns string) {
	t.Helper()
	list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := list.GetResourceVersion()
	go func() {
		for ctx.Err() == nil {
			w, err := dyn.Resource(gvr).Namespace(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
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
// CRDs, side by side in one run (run once: -benchtime 1x).
func BenchmarkStatusWrite(b *testing.B) {
	for range b.N {
		c := measureWriteCost(b, *costObjects, 16, *costRounds, *costRound, *profileDir)
		for i := range c[taskKind.name] {
			task, minimal, bare := c[taskKind.name][i], c[minimalKind.name][i], c[bareKind.name][i]
			b.Logf("round %d: WorkflowTask %.0f writes/s (+%.0f by the controller), %.2f ms CPU/write | minimal %.0f writes/s, %.2f ms | bare %.0f writes/s, %.2f ms",
				i+1, task.perSec(), task.controllerWrites, task.cpuPerWrite(), minimal.perSec(), minimal.cpuPerWrite(), bare.perSec(), bare.cpuPerWrite())
		}
		task, minimal, bare := total(c[taskKind.name]), total(c[minimalKind.name]), total(c[bareKind.name])
		b.ReportMetric(task.perSec(), "task-writes/s")
		b.ReportMetric(minimal.perSec(), "minimal-writes/s")
		b.ReportMetric(bare.perSec(), "bare-writes/s")
		b.ReportMetric(task.cpuPerWrite(), "task-cpu-ms/write")
		b.ReportMetric(minimal.cpuPerWrite(), "minimal-cpu-ms/write")
		b.ReportMetric(bare.cpuPerWrite(), "bare-cpu-ms/write")
		b.ReportMetric(task.cpuPerWrite()/minimal.cpuPerWrite(), "cpu-ratio-minimal")
		b.ReportMetric(task.cpuPerWrite()/bare.cpuPerWrite(), "cpu-ratio-bare")
	}
}
