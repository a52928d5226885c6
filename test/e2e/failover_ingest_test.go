package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// maxRefusedAcrossFailover bounds the pushes refused from the leader's SIGKILL until the new
// leader takes them: the orphaned Lease's 15 s plus a retry period and the new leader's start, at
// one retry a second (Retry-After: 1, or the reporter's interval after no answer), with room.
const maxRefusedAcrossFailover = 30

// Two replicas with --progress-ingest, each with a Pod object of its own (POD_NAME and
// POD_NAMESPACE, as the downward API gives the Deployment's pods), behind the shipped ingest
// Service's selector (a proxy in place of kube-proxy: the replicas are local processes). A pod of
// a task keeps pushing its progress through the Service; the leader is SIGKILLed. The new leader
// labels its Pod, the pushes land on it within their retries (the number refused is bounded),
// the killed replica, restarted in the same Pod, removes the label it left there and refuses
// pushes sent to it directly (429, Retry-After, the connection closed), and the task's status
// ends with the last value pushed.
func TestFailoverIngest(t *testing.T) {
	g := gomega.NewWithT(t)
	ctx := context.Background()
	const ns = "workflowtask-system"
	shipped, err := testenv.Kustomize("kubectl", "default")
	if err != nil {
		t.Fatal(err)
	}
	deployment := shippedObject[appsv1.Deployment](t, shipped, "Deployment", "workflowtask-controller-manager")
	service := shippedObject[corev1.Service](t, shipped, "Service", apiserver.IngestServiceName)
	podA, podB := replicaPod(t, deployment, "e2e-a"), replicaPod(t, deployment, "e2e-b")

	// The suite's manager makes way (handing its Lease over) and comes back at the end.
	manager.Stop()
	t.Cleanup(func() {
		if err := startManager(ctx); err != nil {
			t.Errorf("restarting the suite's manager: %v", err)
		}
	})
	log, err := os.OpenFile(filepath.Join(logDir, "ingest-replicas.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	start := func(pod string, progress, probe int) *devcluster.Manager {
		t.Helper()
		m, err := cluster.StartManager(ctx, devcluster.ManagerOptions{Binary: managerBin, ProgressPort: progress, ProbePort: probe, Log: log,
			ExtraArgs: []string{"--progress-ingest", "--progress-flush-interval=1s"},
			Env:       []string{apiserver.EnvPodName + "=" + pod, apiserver.EnvPodNamespace + "=" + ns}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	label := func(pod string) func() string {
		return func() string {
			p := &corev1.Pod{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, p); err != nil {
				t.Fatal(err)
			}
			return p.Labels[apiserver.IngestLeaderLabel]
		}
	}
	a := start(podA, progressPort, probePort)
	t.Cleanup(func() { a.Stop() })
	g.Eventually(label(podA)).Should(gomega.Equal(apiserver.IngestLeaderValue), "the first replica leads and labels its Pod")
	b := start(podB, standbyProgressPort, standbyProbePort)
	t.Cleanup(func() { b.Stop() })
	g.Consistently(label(podB), 2*time.Second).Should(gomega.BeEmpty(), "the standby's Pod")

	// A task's pod pushes through the Service; its progress advances meanwhile.
	const name = "ha-ingest"
	applyTask(t, name, "", "")
	t.Cleanup(func() { _, _ = cluster.Kubectl(ctx, "delete", "workflowtask", name, "--wait=false") })
	pod := runningPod(t, "default", name)
	task := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, task); err != nil {
		t.Fatal(err)
	}
	proxy := startServiceProxy(t, ns, service.Spec.Selector, map[string]int{podA: progressPort, podB: standbyProgressPort})
	p := newPusher(t, proxy.URL(), apiserver.IngestServiceName+"."+ns+".svc", task, &pod, "relocate")
	p.current.Store(1)
	pushing, stopPushing := context.WithCancel(ctx)
	pushed := make(chan struct{})
	go func() { defer close(pushed); p.run(pushing) }()
	t.Cleanup(func() { stopPushing(); <-pushed })
	advancing := make(chan struct{})
	advanced := make(chan struct{})
	go func() {
		defer close(advanced)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-advancing:
				return
			case <-tick.C:
				p.current.Add(1)
			}
		}
	}()
	stopAdvancing := func() { close(advancing); <-advanced }
	g.Eventually(func() int { return count(p.since(0), true) }).Should(gomega.BeNumerically(">=", 3), "the leader takes pushes")
	g.Eventually(func() int64 { return statusCurrent(t, task, "relocate") }).Should(gomega.BeNumerically(">", 0), "and writes them to the status")

	// The leader dies without handing its Lease over (or removing its label).
	killed := p.mark()
	a.Kill()
	g.Eventually(label(podB), 60*time.Second).Should(gomega.Equal(apiserver.IngestLeaderValue), "the new leader labels its Pod")
	labelled := p.mark()
	g.Eventually(func() int { return count(p.since(labelled), true) }).Should(gomega.BeNumerically(">=", 3), "pushes land on the new leader")
	if n := count(p.since(labelled), false); n > 2 {
		t.Errorf("%d pushes refused after the new leader's Pod was labelled, want at most the one in flight and its retry", n)
	}
	if n := count(p.since(killed), false); n > maxRefusedAcrossFailover {
		t.Errorf("%d pushes refused across the failover, want at most %d", n, maxRefusedAcrossFailover)
	}

	// The killed replica's container restarts in the same Pod, which still carries the label.
	if got := label(podA)(); got != apiserver.IngestLeaderValue {
		t.Fatalf("the killed leader's Pod is labelled %q; want the label it left", got)
	}
	a = start(podA, progressPort, probePort)
	g.Eventually(label(podA)).Should(gomega.BeEmpty(), "removed by the restarted replica at start-up")
	g.Consistently(label(podB), 2*time.Second).Should(gomega.Equal(apiserver.IngestLeaderValue), "the leader's Pod keeps it")
	direct := p.push(ctx, a.ProgressURL+p.path)
	if direct.code != apiserver.CodeTooMany || direct.msg != apiserver.MsgNotLeader || direct.header.Get("Retry-After") == "" || !direct.closed {
		t.Errorf("a push sent to the standby directly: code %d %q, Retry-After %q, connection closed %t; want 429 %q, a Retry-After, the connection closed",
			direct.code, direct.msg, direct.header.Get("Retry-After"), direct.closed, apiserver.MsgNotLeader)
	}

	// The progress stops; the last value is pushed (and re-sent) until the pod stops pushing.
	stopAdvancing()
	last := p.current.Load()
	final := p.mark()
	g.Eventually(func() int { return count(p.since(final), true) }).Should(gomega.BeNumerically(">=", 2), "the last value taken")
	stopPushing()
	<-pushed
	if n := count(p.since(killed), false); n > maxRefusedAcrossFailover {
		t.Errorf("%d pushes refused after the kill, want at most %d", n, maxRefusedAcrossFailover)
	}
	t.Logf("pushes: %d before the kill, %d refused after it (%d after the new leader's label), %d taken after it; last value %d",
		killed, count(p.since(killed), false), count(p.since(labelled), false), count(p.since(killed), true), last)
	g.Eventually(func() int64 { return statusCurrent(t, task, "relocate") }, 15*time.Second).Should(gomega.Equal(last), "the status ends with the last value pushed")
	g.Consistently(func() int64 { return statusCurrent(t, task, "relocate") }, 2*time.Second).Should(gomega.Equal(last))
}

// replicaPod creates, in the operator's namespace, a Pod like the shipped Deployment's that no
// node runs (a scheduling gate holds it): the Pod a local replica process stands for.
func replicaPod(t *testing.T, d *appsv1.Deployment, suffix string) string {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + suffix, Namespace: "workflowtask-system", Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "e2e.taskops.dev/a-local-process"}}
	if err := k8sClient.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() error {
		err := k8sClient.Create(ctx, pod.DeepCopy())
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s still being deleted: %w", pod.Name, err)
		}
		return err
	}).Should(gomega.Succeed())
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, pod, client.GracePeriodSeconds(0)) })
	return pod.Name
}

// statusCurrent is the current of the task's status.progress entry of a type (-1: none).
func statusCurrent(t *testing.T, task *workflowv1alpha1.WorkflowTask, entryType string) int64 {
	t.Helper()
	got := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got); err != nil {
		t.Fatal(err)
	}
	for _, e := range got.Status.Progress {
		if e.Type == entryType {
			return e.Current
		}
	}
	return -1
}

// shippedObject is an object of config/default's rendered output, in its type.
func shippedObject[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			out := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("config/default ships no %s %s", kind, name)
	return nil
}
