package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
)

// Ports of the second replica.
const (
	standbyProgressPort = 19444
	standbyProbePort    = 18082
)

// curlAt GETs a path of one replica's endpoint.
func curlAt(t *testing.T, baseURL, token, path string) string {
	t.Helper()
	out, err := exec.Command("curl", "-sk", "--max-time", "10", "-H", "Authorization: Bearer "+token, baseURL+path).Output()
	if err != nil {
		return "curl error: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}

// holder is who holds the operator's leader-election Lease.
func holder(t *testing.T) string {
	t.Helper()
	lease := &coordinationv1.Lease{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: "workflowtask-system", Name: "workflowtask-operator.taskops.dev"}, lease); err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// jobsOf lists the Jobs of a task by its label: a task must never get a second one.
func jobsOf(t *testing.T, name string) []batchv1.Job {
	t.Helper()
	jobs := &batchv1.JobList{}
	if err := k8sClient.List(context.Background(), jobs, client.InNamespace("default"), client.MatchingLabels{workflowv1alpha1.LabelTaskName: name}); err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

// Two replicas with leader election; the leader is killed (SIGKILL: no lease handed over) while
// tasks run and others are being created. The other replica takes over, no task is lost or gets
// a second Job, every task completes, and the endpoint answers for every task from the replicas
// that are up throughout (it needs no lease): from both before the kill, from the standby while
// the lease is orphaned, and from both again once the killed replica is back.
func TestFailover(t *testing.T) {
	g := gomega.NewWithT(t)
	ctx := context.Background()
	alice := endpointToken(t, "default", "alice")
	log, err := os.OpenFile(filepath.Join(logDir, "standby.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	standby, err := cluster.StartManager(ctx, devcluster.ManagerOptions{Binary: managerBin, ProgressPort: standbyProgressPort, ProbePort: standbyProbePort, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Stop()

	const before, during = 6, 4
	names := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%d", prefix, i))
		}
		return out
	}
	first, second := names("ha-a", before), names("ha-b", during)
	jobUIDs := map[string]types.UID{}
	ids := map[string]string{}
	for _, name := range first {
		applyTask(t, name, "", "")
	}
	for _, name := range first {
		pod := runningPod(t, "default", name)
		report(t, pod, name, "set", "relocate", "1/2")
		g.Eventually(func() string { ids[name] = jsonpath(t, "default", "wft", name, "{.status.id}"); return ids[name] }).ShouldNot(gomega.BeEmpty())
		jobUIDs[name] = jobsOf(t, name)[0].UID
	}
	answersFor := func(baseURL string, tasks []string) func(gomega.Gomega) {
		return func(g gomega.Gomega) {
			for _, name := range tasks {
				g.Expect(curlAt(t, baseURL, alice, "/workflow/progress/"+ids[name])).To(gomega.ContainSubstring(`"relocate":{"total":2,"current":1`), "%s at %s", name, baseURL)
			}
		}
	}
	for _, m := range []*devcluster.Manager{manager, standby} {
		g.Eventually(answersFor(m.ProgressURL, first)).Should(gomega.Succeed())
	}

	// The leader (the suite's manager, started first) dies without handing the lease over.
	leader := holder(t)
	manager.Kill()
	for _, name := range second {
		applyTask(t, name, "", "") // created while nobody holds a valid lease
	}
	answersFor(standby.ProgressURL, first)(g) // at once: the standby serves without the lease (held by the dead leader for 15 s)
	for _, name := range second {             // the standby takes over: the new tasks get their Jobs
		pod := runningPod(t, "default", name)
		report(t, pod, name, "set", "relocate", "1/2")
		g.Eventually(func() string { ids[name] = jsonpath(t, "default", "wft", name, "{.status.id}"); return ids[name] }).ShouldNot(gomega.BeEmpty())
	}
	if h := holder(t); h == leader {
		t.Errorf("the lease is still held by %s, the killed replica: the Jobs were not made by a new leader", h)
	}
	all := append(append([]string{}, first...), second...)
	g.Eventually(answersFor(standby.ProgressURL, all)).Should(gomega.Succeed())

	// The killed replica comes back (as the suite's manager, now the standby of the other).
	if err := startManager(ctx); err != nil {
		t.Fatal(err)
	}
	g.Eventually(answersFor(manager.ProgressURL, all)).Should(gomega.Succeed())

	for _, name := range all {
		completePod(t, runningPod(t, "default", name))
	}
	for _, name := range all {
		kubectl(t, "wait", "--for=condition=Ready", "workflowtask/"+name, "--timeout=90s")
		jobs := jobsOf(t, name)
		if len(jobs) != 1 {
			t.Errorf("%s has %d Jobs, want 1", name, len(jobs))
		} else if uid, ok := jobUIDs[name]; ok && jobs[0].UID != uid {
			t.Errorf("%s's Job was replaced across the failover (UID %s, was %s)", name, jobs[0].UID, uid)
		}
	}
	// The standby stops cleanly and hands the lease back for the tests that follow.
	standby.Stop()
	for _, name := range all {
		kubectl(t, "delete", "workflowtask", name, "--wait=false")
	}
}
