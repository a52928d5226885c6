package apiserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// OwnPod reads the downward API's environment; outside a pod there is none, and no label is kept.
func TestOwnPod(t *testing.T) {
	t.Setenv(apiserver.EnvPodName, "")
	t.Setenv(apiserver.EnvPodNamespace, "workflowtask-system")
	if pod, ok := apiserver.OwnPod(); ok {
		t.Errorf("OwnPod() = %s, true without %s", pod, apiserver.EnvPodName)
	}
	t.Setenv(apiserver.EnvPodName, "manager-abc")
	if pod, ok := apiserver.OwnPod(); !ok || pod != (types.NamespacedName{Namespace: "workflowtask-system", Name: "manager-abc"}) {
		t.Errorf("OwnPod() = %s, %t", pod, ok)
	}
}

// The ingest leader label against a real API server, patched with the operator's own RBAC
// (config/rbac): a replica starting removes its pod's stale label, the leader labels its pod,
// leading or the process ending removes it, each replica touches its own pod only, and a
// refused patch is retried until it is allowed.
func TestLeaderLabel(t *testing.T) {
	g := gomega.NewWithT(t)
	env, admin, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	adminClient, err := client.New(admin, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	operatorCfg, err := testenv.ManagerConfig(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := client.New(operatorCfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	const ns = testenv.OperatorNamespace
	newPod := func(name string, labels map[string]string) types.NamespacedName {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "workflowtask-operator:test"}}},
		}
		if err := adminClient.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		return client.ObjectKeyFromObject(pod)
	}
	label := func(pod types.NamespacedName) func() string {
		return func() string {
			p := &corev1.Pod{}
			if err := adminClient.Get(ctx, pod, p); err != nil {
				t.Fatal(err)
			}
			return p.Labels[apiserver.IngestLeaderLabel]
		}
	}
	// run runs r until the returned stop is called (or the test ends), and stop waits for it.
	run := func(r manager.Runnable) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := r.Start(rctx); err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
		stop = func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	leaderLabels := map[string]string{"app.kubernetes.io/name": "workflowtask-operator", apiserver.IngestLeaderLabel: apiserver.IngestLeaderValue}

	// A replica whose container restarted in a pod that still carries the label (it was the
	// leader when it died) removes it at start-up.
	podA := newPod("manager-a", leaderLabels)
	a := apiserver.NewLeaderLabel(operator, podA, testr.New(t).WithName("a"))
	if a.NeedLeaderElection() || !a.Leader().(manager.LeaderElectionRunnable).NeedLeaderElection() {
		t.Fatal("the start-up side must run on every replica, the leader side on the leader only")
	}
	stopA := run(a)
	g.Eventually(label(podA)).Should(gomega.BeEmpty(), "the stale label removed at start-up")

	// The leader labels its own pod, and no other.
	podB := newPod("manager-b", map[string]string{"app.kubernetes.io/name": "workflowtask-operator"})
	b := apiserver.NewLeaderLabel(operator, podB, testr.New(t).WithName("b"))
	stopB := run(b)
	stopLeadingB := run(b.Leader())
	g.Eventually(label(podB)).Should(gomega.Equal(apiserver.IngestLeaderValue), "the leader's pod labelled")
	g.Consistently(label(podA), 300*time.Millisecond).Should(gomega.BeEmpty(), "the other replica's pod")

	// No longer leading (the process still running): the label goes.
	stopLeadingB()
	g.Eventually(label(podB)).Should(gomega.BeEmpty(), "removed when leading ends")
	// Leading again, then the process stops (its leader runnables and itself cancelled): the
	// label goes before Start returns.
	stopLeadingB = run(b.Leader())
	g.Eventually(label(podB)).Should(gomega.Equal(apiserver.IngestLeaderValue))
	stopB()
	if got := label(podB)(); got != "" {
		t.Errorf("after the replica stopped its pod is labelled %q", got)
	}
	stopLeadingB()
	stopA()

	// A replica whose patches are refused (its Role not bound yet) retries until they are allowed.
	podC := newPod("manager-c", leaderLabels)
	lateCfg, _, err := testenv.ServiceAccountConfig(ctx, admin, ns, "late-rbac")
	if err != nil {
		t.Fatal(err)
	}
	late, err := client.New(lateCfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := apiserver.NewLeaderLabel(late, podC, testr.New(t).WithName("c"))
	run(c)
	g.Consistently(label(podC), time.Second).Should(gomega.Equal(apiserver.IngestLeaderValue), "forbidden: the stale label stays for now")
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "late-rbac", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "workflowtask-ingest-leader-role"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "late-rbac", Namespace: ns}},
	}
	if err := adminClient.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	g.Eventually(label(podC), 15*time.Second).Should(gomega.BeEmpty(), "removed once allowed, without a restart")
	run(c.Leader())
	g.Eventually(label(podC)).Should(gomega.Equal(apiserver.IngestLeaderValue))
}
