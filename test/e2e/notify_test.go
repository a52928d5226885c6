package e2e_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// The operator (its own process, --notify-sink) is SIGKILLed after a task finished and before
// the sink took the announcement: the next operator delivers it from the task's record, and
// nothing arrives twice under a new id.
func TestNotifyAcrossSIGKILL(t *testing.T) {
	g := gomega.NewWithT(t)
	r := testenv.NewEventReceiver(t, testenv.Accept)
	restartManager(t, "--notify-sink="+r.URL)
	t.Cleanup(func() { restartManager(t) })

	applyTask(t, "announced", "", "")
	pod := runningPod(t, "default", "announced")
	report(t, pod, "announced", "set", "relocate", "50/100")
	g.Eventually(func() []string { return r.About("default", "announced") }).
		Should(gomega.Equal([]string{"queued", "started", "progress.relocate.50"}))

	r.SetBehaviour(testenv.Fail)
	completePod(t, pod)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "announced", "{.status.phase}") }).Should(gomega.Equal("Completed"))
	attempts := r.Attempts()
	g.Eventually(r.Attempts).Should(gomega.BeNumerically(">", attempts), "the sink refused the announcement of the end")
	manager.Kill()

	r.SetBehaviour(testenv.Accept)
	restartManager(t, "--notify-sink="+r.URL)
	g.Eventually(func() []string { return r.About("default", "announced") }).Should(gomega.ContainElement("succeeded"))
	said, renamed := r.Distinct("default", "announced")
	if diff := cmp.Diff([]string{"queued", "started", "progress.relocate.50", "succeeded"}, said); diff != "" {
		t.Errorf("announcements, first arrivals (-want +got):\n%s", diff)
	}
	if len(renamed) > 0 {
		t.Errorf("sent again under a new id: %v", renamed)
	}
	t.Logf("%d events accepted for %d announcements (re-sent after the SIGKILL: the ones delivered since the record last said so)",
		len(r.About("default", "announced")), len(said))
	kubectl(t, "delete", "wft", "announced", "--wait=false")
}

// restartManager stops the shared manager (SIGKILL if it still runs) and starts it again with
// the suite's flags and extra ones.
func restartManager(t *testing.T, extra ...string) {
	t.Helper()
	if !manager.Exited() {
		manager.Kill()
	}
	if err := startManager(context.Background(), extra...); err != nil {
		t.Fatal(err)
	}
}
