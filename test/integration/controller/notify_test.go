package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/controllers/notify"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// Namespaces of the notifying controllers (startNotifyingController), one per test; the suite's
// controller leaves them alone.
const (
	notifyLifeNS    = "ctrl-notify-life"
	notifyRestartNS = "ctrl-notify-restart"
	notifyDownNS    = "ctrl-notify-down"
	notifyHostileNS = "ctrl-notify-hostile"
	notifyOptInNS   = "ctrl-notify-optin"
)

var notifyNamespaces = []string{notifyLifeNS, notifyRestartNS, notifyDownNS, notifyHostileNS, notifyOptInNS}

// startNotifyingController runs, until stop or the end of the test, a controller for namespace
// ns alone that announces to sinks (as main.go with --notify-config), as the operator's
// ServiceAccount with its real RBAC. stop returns once the manager stopped.
func startNotifyingController(t *testing.T, ns string, sinks ...notify.Sink) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	_, err = testenv.StartManagerWith(ctx, adminCfg, testenv.ManagerSetup{
		Cache: func(o *cache.Options) { o.DefaultNamespaces = map[string]cache.Config{ns: {}} },
		Reconciler: func(m ctrl.Manager, r *controllers.WorkflowTaskReconciler) error {
			return r.SetupNotifier(m, notify.Config{Sinks: sinks})
		},
		Stopped: stopped,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-stopped }) }
	t.Cleanup(stop)
	return stop
}

// waitSaid waits until r accepted exactly want about the task (in that order), and asserts
// nothing more comes.
func waitSaid(t *testing.T, r *testenv.EventReceiver, task *workflowv1alpha1.WorkflowTask, want ...string) {
	t.Helper()
	g := gomega.NewWithT(t)
	g.Eventually(func() []string { return r.About(task.Namespace, task.Name) }).Should(gomega.Equal(want))
}

// A task's life reaches two sinks (binary and structured), every transition once and in order,
// with the documented type, source, subject, id and data, nothing of the task's template; the
// same transitions are Events; once the task finished and everything was delivered, its
// record says so (one write) and keeps nothing pending.
func TestNotifyLifecycle(t *testing.T) {
	binary := testenv.NewEventReceiver(t, testenv.Accept)
	structured, caFile := testenv.NewTLSEventReceiver(t, testenv.Accept)
	authFile := filepath.Join(t.TempDir(), "authorization")
	if err := os.WriteFile(authFile, []byte("Bearer first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startNotifyingController(t, notifyLifeNS,
		notify.Sink{Name: "binary", URL: binary.URL, AuthorizationFile: authFile},
		notify.Sink{Name: "structured", URL: structured.URL, Mode: notify.ModeStructured, CAFile: caFile})
	w := testutil.MakeTask("life", notifyLifeNS).Owner("alice").Type(workflowv1alpha1.TaskTypeUpload)
	w.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "API_KEY", Value: "hunter2-never-announced"}}
	task := createTask(t, w)

	job := waitJob(t, task)
	waitSaid(t, binary, task, "queued")
	if err := os.WriteFile(authFile, []byte("Bearer rotated"), 0o600); err != nil { // the Secret rotated
		t.Fatal(err)
	}
	runJob(t, job)
	waitSaid(t, binary, task, "queued", "started")
	for _, step := range []struct {
		current int64
		said    string
	}{{30, "progress.upload.25"}, {60, "progress.upload.50"}, {100, "progress.upload.100"}} {
		if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload", step.current, 100)); err != nil {
			t.Fatal(err)
		}
		gomega.NewWithT(t).Eventually(func() []string { return binary.About(task.Namespace, task.Name) }).Should(gomega.ContainElement(step.said))
	}
	completeJob(t, job)
	life := []string{"queued", "started", "progress.upload.25", "progress.upload.50", "progress.upload.100", "succeeded"}
	waitSaid(t, binary, task, life...)
	waitSaid(t, structured, task, life...)

	// Delivered everywhere: the record says so once (sent), nothing pending.
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		ob := controllers.Outbox(getTask(g, task))
		g.Expect(ob.Sent).To(gomega.Equal(int64(6)))
		g.Expect(ob.Pending).To(gomega.BeEmpty())
	}).Should(gomega.Succeed())
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(eventReasons(g, task)).To(gomega.ContainElements(controllers.EventQueued, controllers.EventProcessing,
			controllers.EventProgressMilestone, controllers.EventCompleted))
	}).Should(gomega.Succeed())

	stored := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), stored); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Delete(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	waitSaid(t, binary, task, append(life, "deleted")...)
	waitSaid(t, structured, task, append(life, "deleted")...)
	gomega.NewWithT(t).Consistently(func() int {
		return len(binary.About(task.Namespace, task.Name)) + len(structured.About(task.Namespace, task.Name))
	}).
		Should(gomega.Equal(2*len(life)+2), "nothing said twice")

	wantIDs := []string{".queued", ".started", ".progress.upload.25", ".progress.upload.50", ".progress.upload.100", ".succeeded", ".deleted"}
	for name, r := range map[string]*testenv.EventReceiver{"binary": binary, "structured": structured} {
		got := r.Received()
		for i, ev := range got {
			e := ev.Event
			if want := string(task.UID) + wantIDs[i]; e.ID() != want {
				t.Errorf("%s: event %d id %q, want %q", name, i, e.ID(), want)
			}
			if e.SpecVersion() != "1.0" || e.Source() != "/apis/workflow.taskops.dev/v1alpha1/namespaces/"+notifyLifeNS+"/workflowtasks/life" ||
				e.Subject() != notifyLifeNS+"/life" || e.Time().IsZero() || e.DataContentType() != "application/json" {
				t.Errorf("%s: event %d attributes: %s", name, i, e.String())
			}
			var d notify.Data
			if err := json.Unmarshal(e.Data(), &d); err != nil {
				t.Fatalf("%s: event %d data: %v", name, i, err)
			}
			if d.ID != stored.Status.ID || d.UID != string(task.UID) || d.Owner != "alice" || d.Type != "upload" || d.Name != "life" {
				t.Errorf("%s: event %d data: %+v", name, i, d)
			}
			raw := string(ev.Body) + fmt.Sprint(ev.Header)
			for _, never := range []string{"hunter2", "managedFields", "template", "API_KEY"} {
				if strings.Contains(raw, never) {
					t.Errorf("%s: event %d carries %q: %s", name, i, never, raw)
				}
			}
		}
		if name == "structured" && !strings.HasPrefix(got[0].Header.Get("Content-Type"), "application/cloudevents+json") {
			t.Errorf("structured sink got Content-Type %q", got[0].Header.Get("Content-Type"))
		}
		if name == "binary" && got[0].Header.Get("Ce-Id") == "" {
			t.Errorf("binary sink got no ce-id header: %v", got[0].Header)
		}
		if name == "binary" && (got[0].Header.Get("Authorization") != "Bearer first" || got[1].Header.Get("Authorization") != "Bearer rotated") {
			t.Errorf("binary sink's Authorization: %q, then %q; want the file's, as it was at each attempt",
				got[0].Header.Get("Authorization"), got[1].Header.Get("Authorization"))
		}
		if name == "structured" && got[0].Header.Get("Authorization") != "" {
			t.Errorf("a sink without authorizationFile got Authorization %q", got[0].Header.Get("Authorization"))
		}
	}
	var last notify.Data
	_ = json.Unmarshal(binary.Received()[5].Event.Data(), &last)
	if last.Phase != "Completed" || last.Reason != workflowv1alpha1.ReasonCompleted || last.CompletionTime == nil ||
		!cmp.Equal(last.Progress, []notify.ProgressEntry{{Type: "upload", Current: 100, Total: 100}}) {
		t.Errorf("succeeded data: %+v", last)
	}
}

// The operator stops between a transition and its delivery: the next one delivers it from the
// task's record, and whatever it sends again has the id it had (at least once, never under a
// new id).
func TestNotifyAcrossRestart(t *testing.T) {
	r := testenv.NewEventReceiver(t, testenv.Accept)
	sink := notify.Sink{Name: "sink", URL: r.URL}
	stop := startNotifyingController(t, notifyRestartNS, sink)
	task := createTask(t, testutil.MakeTask("restart", notifyRestartNS))
	job := waitJob(t, task)
	runJob(t, job)
	waitSaid(t, r, task, "queued", "started")

	r.SetBehaviour(testenv.Fail)
	if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload", 50, 100)); err != nil {
		t.Fatal(err)
	}
	completeJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	var ob notify.Outbox
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) []string {
		ob = controllers.Outbox(getTask(g, task))
		var pending []string
		for _, a := range ob.Pending {
			pending = append(pending, a.What)
		}
		return pending
	}).Should(gomega.ContainElements(notify.Progress, notify.Succeeded), "the transitions are in the record before they are delivered")
	attempts := r.Attempts()
	gomega.NewWithT(t).Eventually(r.Attempts).Should(gomega.BeNumerically(">", attempts), "a failed attempt")
	stop() // the operator is gone: what it had delivered lived in memory only

	r.SetBehaviour(testenv.Accept)
	startNotifyingController(t, notifyRestartNS, sink)
	gomega.NewWithT(t).Eventually(func() []string { return r.About(task.Namespace, task.Name) }).Should(gomega.ContainElement("succeeded"))

	firstSaid, renamed := r.Distinct(task.Namespace, task.Name)
	if len(renamed) > 0 {
		t.Errorf("sent again under a new id: %v", renamed)
	}
	if diff := cmp.Diff([]string{"queued", "started", "progress.upload.50", "succeeded"}, firstSaid); diff != "" {
		t.Errorf("announcements (first arrival, -want +got):\n%s", diff)
	}
	if resent := len(r.Received()) - len(firstSaid); resent > len(ob.Pending) {
		t.Errorf("%d sent again after the restart, more than the %d the record held past sent=%d", resent, len(ob.Pending), ob.Sent)
	}
}

// runToCompletion takes each task through its life as the Job controller and a pod would:
// running, progress to 100 %, complete.
func runToCompletion(t *testing.T, tasks ...*workflowv1alpha1.WorkflowTask) {
	t.Helper()
	for _, task := range tasks {
		job := waitJob(t, task)
		runJob(t, job)
		waitPhase(t, task, workflowv1alpha1.TaskPhaseProcessing)
		if err := writeProgress(context.Background(), k8sClient, task, "pod-a", progress("upload", 100, 100)); err != nil {
			t.Fatal(err)
		}
		completeJob(t, job)
	}
	for _, task := range tasks {
		waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	}
}

func createTasks(t *testing.T, ns, prefix string, n int) []*workflowv1alpha1.WorkflowTask {
	var tasks []*workflowv1alpha1.WorkflowTask
	for i := range n {
		tasks = append(tasks, createTask(t, testutil.MakeTask(fmt.Sprintf("%s-%d", prefix, i), ns)))
	}
	return tasks
}

var wholeLife = []string{"queued", "started", "progress.upload.100", "succeeded"}

// A sink that is down for 30 s (connections closed unanswered) while tasks live their whole
// lives gets every announcement once it is back, in order per task; meanwhile it was tried
// about once per worker per backoff, not once per announcement.
func TestNotifySinkDownThenRecovers(t *testing.T) {
	t.Parallel()
	r := testenv.NewEventReceiver(t, testenv.Drop)
	const workers = 2
	startNotifyingController(t, notifyDownNS, notify.Sink{Name: "down", URL: r.URL, Workers: workers,
		MaxBackoff: metav1.Duration{Duration: 4 * time.Second}})
	down := time.Now()
	tasks := createTasks(t, notifyDownNS, "down", 5)
	runToCompletion(t, tasks...)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	attemptsWhileDown := r.Attempts()
	r.SetBehaviour(testenv.Accept)
	for _, task := range tasks {
		waitSaid(t, r, task, wholeLife...)
	}
	// Backoff doubling from 0.5 s to 4 s over 30 s: at most ~12 attempts per worker.
	if most := int64(workers * 12); attemptsWhileDown > most {
		t.Errorf("%d attempts while the sink was down for 30 s, want at most %d", attemptsWhileDown, most)
	}
	if len(r.Received()) != len(tasks)*len(wholeLife) {
		t.Errorf("received %d events, want %d", len(r.Received()), len(tasks)*len(wholeLife))
	}
}

// Sinks that misbehave — one never answers, one answers 503, one redirects, one refuses every
// event, one's certificate is not verified — cost the good sink and the controller nothing: every task finishes, the good sink
// gets everything; the hanging sink holds no more requests than its workers, the failing one
// is tried per backoff (fewer attempts than announcements), the redirect is not followed, and
// the refused events are dropped once each, counted and said in an Event.
func TestNotifyHostileSinksIsolated(t *testing.T) {
	t.Parallel()
	good := testenv.NewEventReceiver(t, testenv.Accept)
	hang := testenv.NewEventReceiver(t, testenv.Hang)
	failing := testenv.NewEventReceiver(t, testenv.Fail)
	trap := testenv.NewEventReceiver(t, testenv.Accept)
	redirect := testenv.NewEventReceiver(t, testenv.Redirect)
	redirect.RedirectTo = trap.URL
	rejecting := testenv.NewEventReceiver(t, testenv.Reject)
	untrusted, _ := testenv.NewTLSEventReceiver(t, testenv.Accept) // its CA not given: never verified
	startNotifyingController(t, notifyHostileNS,
		notify.Sink{Name: "hang", URL: hang.URL, Workers: 3},
		notify.Sink{Name: "failing", URL: failing.URL},
		notify.Sink{Name: "redirect", URL: redirect.URL},
		notify.Sink{Name: "rejecting", URL: rejecting.URL},
		notify.Sink{Name: "untrusted", URL: untrusted.URL},
		notify.Sink{Name: "good", URL: good.URL})
	tasks := createTasks(t, notifyHostileNS, "hostile", 10)
	runToCompletion(t, tasks...)
	for _, task := range tasks {
		waitSaid(t, good, task, wholeLife...)
	}
	announcements := int64(len(tasks) * len(wholeLife))
	gomega.NewWithT(t).Eventually(rejecting.Attempts).Should(gomega.Equal(announcements), "each refused event tried once")
	gomega.NewWithT(t).Consistently(rejecting.Attempts).Should(gomega.Equal(announcements), "and never again")
	if got := hang.MaxInFlight(); got < 1 || got > 3 {
		t.Errorf("the hanging sink held %d requests at once, want 1..3 (its workers)", got)
	}
	if got := failing.Attempts(); got < 1 || got >= announcements {
		t.Errorf("the failing sink was tried %d times for %d announcements: want backoff per sink", got, announcements)
	}
	if got := untrusted.Attempts(); got != 0 {
		t.Errorf("%d requests reached a sink whose certificate no configured CA verifies", got)
	}
	if got := trap.Attempts(); got != 0 || redirect.Attempts() == 0 {
		t.Errorf("redirect: %d attempts, %d requests reached its target (want >0, 0)", redirect.Attempts(), got)
	}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(eventReasons(g, tasks[0])).To(gomega.ContainElement(controllers.EventNotificationDropped))
	}).Should(gomega.Succeed())
}

// A sink the platform team offers as opt-in gets the announcements of the tasks whose owners
// name it in the task's annotation, and no others; a sink for everyone gets them all.
func TestNotifyOptInByAnnotation(t *testing.T) {
	t.Parallel()
	everyone := testenv.NewEventReceiver(t, testenv.Accept)
	team := testenv.NewEventReceiver(t, testenv.Accept)
	startNotifyingController(t, notifyOptInNS,
		notify.Sink{Name: "everyone", URL: everyone.URL},
		notify.Sink{Name: "team", URL: team.URL, OptIn: true})
	subscribed := createTask(t, testutil.MakeTask("subscribed", notifyOptInNS).
		Annotation(workflowv1alpha1.AnnotationNotify, "elsewhere, team"))
	plain := createTask(t, testutil.MakeTask("plain", notifyOptInNS))
	runToCompletion(t, subscribed, plain)
	for _, task := range []*workflowv1alpha1.WorkflowTask{subscribed, plain} {
		waitSaid(t, everyone, task, wholeLife...)
	}
	waitSaid(t, team, subscribed, wholeLife...)
	gomega.NewWithT(t).Consistently(func() []string { return team.About(plain.Namespace, plain.Name) }).Should(gomega.BeEmpty())
}
