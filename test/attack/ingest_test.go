package attack_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// The ingest door's per-pod budget of pushes (apiserver/ingest.go): pushBurst at once, refilled
// at pushesPerSecond.
const pushesPerSecond, pushBurst = 2, 10

// pod is a running pod of a task's Job with a token of the task's runner bound to it for the
// ingest audience: what the kubelet mounts into a task's pod when ingest is on.
type pod struct {
	task  *workflowv1alpha1.WorkflowTask
	obj   *corev1.Pod
	token string
}

// runningPod is a running pod of task's Job with an ingest token.
func runningPod(t testing.TB, task *workflowv1alpha1.WorkflowTask, name string) pod {
	t.Helper()
	p := pod{task: task, obj: testenv.RunningTaskPod(t, k8sClient, task, name)}
	p.token = p.newToken(t, ingest.Audience)
	return p
}

// newToken is a new token of the pod's runner bound to the pod, for audiences (none:
// kube-apiserver's own).
func (p pod) newToken(t testing.TB, audiences ...string) string {
	t.Helper()
	return testenv.PodToken(t, adminCfg, p.obj, audiences...)
}

// url is where the pod pushes.
func (p pod) url() string { return progressURL + ingest.Path(p.task.Namespace, p.task.Name) }

// push sends the pod's whole state — entry typ at current — with token (empty: the pod's).
func (p pod) push(c *http.Client, typ string, current int64, token string) answer {
	if token == "" {
		token = p.token
	}
	return sendRequest(c, http.MethodPut, p.url(), pushBody(p.task.UID, typ, current), bearer(token)...)
}

// pushBody is a push of one entry for the task with uid.
func pushBody(uid types.UID, typ string, current int64) []byte {
	b, _ := json.Marshal(ingest.Push{TaskUID: uid, Entries: []workflowv1alpha1.ProgressEntry{
		{Type: typ, Current: current, Total: 1000}}})
	return b
}

func bearer(token string) []string {
	return []string{"Authorization", "Bearer " + token, "Content-Type", "application/json"}
}

// shown is the current of entry typ of task as its owner reads it at the endpoint (pushed
// values first, then the status); -1 when there is none.
func shown(t testing.TB, owner saUser, task *workflowv1alpha1.WorkflowTask, typ string) int64 {
	t.Helper()
	a := send(clientFrom(ownerAddress), progressURL+readPath(task), "Authorization", "Bearer "+owner.token)
	var body struct {
		Data map[string]struct{ Current int64 } `json:"data"`
	}
	if a.code() != apiserver.CodeSuccess || json.Unmarshal(a.body, &body) != nil {
		t.Fatalf("the owner reading %s: HTTP %d %.200s (%v)", task.Name, a.status, a.body, a.err)
	}
	if e, ok := body.Data[typ]; ok {
		return e.Current
	}
	return -1
}

// ownerAddress is the address owners read from in these tests.
var ownerAddress = freshAddress()

// stored is the current of entry typ in task's status.progress on kube-apiserver; -1: none.
func stored(t testing.TB, task *workflowv1alpha1.WorkflowTask, typ string) int64 {
	t.Helper()
	got := &workflowv1alpha1.WorkflowTask{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(task), got); err != nil {
		t.Fatal(err)
	}
	for _, e := range got.Status.Progress {
		if e.Type == typ {
			return e.Current
		}
	}
	return -1
}

// countCodes counts answers by envelope code (-1: not an envelope, or no answer).
func countCodes(answers []answer) map[int]int {
	out := map[int]int{}
	for _, a := range answers {
		out[a.code()]++
	}
	return out
}

// resigned is token with its claims changed by mutate, signed by key (the header kept).
func resigned(t testing.TB, token string, key crypto.Signer, mutate func(claims map[string]any)) string {
	t.Helper()
	out, err := testenv.Resign(token, key, mutate)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// clusterKey is kube-apiserver's service-account signing key: what signs every genuine token.
var clusterKey = sync.OnceValues(func() (crypto.Signer, error) {
	return testenv.ServiceAccountSigner(env.ControlPlane.GetAPIServer().CertDir)
})

// strangerKey is a key the cluster never had.
var strangerKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// Hostile credentials at the ingest door, each pushing a value the victim pod never pushed to
// the victim's task from an address of its own, 24 requests 8 at a time: every one is refused
// with the envelope; a token the door can judge itself — forged in the name of the victim pod,
// the victim pod's own token expired (a genuine signature), or for kube-apiserver's audience,
// or for the readers' audience — costs no TokenReview at all; a token that cannot be judged
// here (junk) is reviewed only within the address's budget of failed logins; either way the
// address's budget is spent: past it every refusal is a 429 after the tarpit. Then the victim
// pod, from the attacker's own address, still pushes with the token it has and with a new one,
// and its owner never sees the attacker's value.
func TestIngestHostileCredentials(t *testing.T) {
	const n, workers, hostile = 24, 8, 666
	owner := newSAUser(t, "users", "ingest-creds-owner")
	task := createTaskObject(t, "ingest-creds", owner)
	victim := runningPod(t, task, "ingest-creds-victim")
	if a := victim.push(clientFrom(freshAddress()), "upload", 1, ""); a.code() != apiserver.CodeSuccess {
		t.Fatalf("the victim's first push: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	key, err := clusterKey()
	if err != nil {
		t.Fatal(err)
	}
	var seq int
	var mu sync.Mutex
	unique := func(claims map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		seq++
		claims["jti"] = fmt.Sprint("hostile-", seq)
	}
	kubeAudience := victim.newToken(t)
	readersAudience := victim.newToken(t, apiserver.TokenAudience)
	cases := []struct {
		name   string
		header func(t *testing.T, i int) []string
		// budgeted: a token that cannot be checked here, reviewed within the address's budget.
		budgeted bool
	}{
		{name: "forged tokens naming the victim pod", header: func(t *testing.T, _ int) []string {
			return bearer(resigned(t, victim.token, strangerKey(), unique))
		}},
		{name: "the victim pod's token, expired, genuinely signed", header: func(t *testing.T, _ int) []string {
			return bearer(resigned(t, victim.token, key, func(c map[string]any) {
				unique(c)
				now := time.Now()
				c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
			}))
		}},
		{name: "the victim pod's token for kube-apiserver's audience", header: func(*testing.T, int) []string { return bearer(kubeAudience) }},
		{name: "the victim pod's token for the readers' audience", header: func(*testing.T, int) []string { return bearer(readersAudience) }},
		{name: "unique junk JWTs (no issuer)", budgeted: true, header: func(*testing.T, int) []string {
			return bearer(junkJWT(int(junkSeq.Add(1)), 300))
		}},
		{name: "no credential", header: func(*testing.T, int) []string { return []string{"Content-Type", "application/json"} }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			attackerIP := freshAddress()
			before, start := tokenReviews.Load(), time.Now()
			answers := floodRequests(clientFrom(attackerIP), http.MethodPut, victim.url(), pushBody(task.UID, "upload", hostile), n, workers,
				func(i int) []string { return c.header(t, i) })
			reviews, elapsed := tokenReviews.Load()-before, time.Since(start)
			codes := countCodes(answers)
			if codes[apiserver.CodeLoginRequired]+codes[apiserver.CodeTooMany] != n {
				t.Fatalf("answers by code %v: not all %d refused (401 or 429)", codes, n)
			}
			refill := int(elapsed.Seconds()*opts.FailedLoginsPerSecond) + 1
			if got, most := codes[apiserver.CodeLoginRequired], opts.FailedLoginBurst+refill; got > most {
				t.Errorf("%d refusals before the address's budget ran out; its budget is %d", got, most)
			}
			if got, least := codes[apiserver.CodeTooMany], n-opts.FailedLoginBurst-refill; got < least {
				t.Errorf("%d answers 429 past the address's budget; want at least %d (the budget is spent)", got, least)
			}
			switch {
			case !c.budgeted && reviews != 0:
				t.Errorf("%d TokenReviews for %d tokens the door can judge itself; want none", reviews, n)
			case c.budgeted && reviews > int64(opts.FailedLoginBurst+refill):
				t.Errorf("%d TokenReviews for %d junk tokens; the address's budget allows %d", reviews, n, opts.FailedLoginBurst+refill)
			}
			same := sameAddressClient(attackerIP)
			if a := victim.push(same, "upload", int64(10*i+2), ""); a.code() != apiserver.CodeSuccess {
				t.Errorf("the victim pod on the attacker's address, with its token: HTTP %d %.200s (%v)", a.status, a.body, a.err)
			}
			if a := victim.push(same, "upload", int64(10*i+3), victim.newToken(t, ingest.Audience)); a.code() != apiserver.CodeSuccess {
				t.Errorf("the victim pod on the attacker's address, with a new token: HTTP %d %.200s (%v)", a.status, a.body, a.err)
			}
			if got := shown(t, owner, task, "upload"); got != int64(10*i+3) {
				t.Errorf("the owner sees upload %d, want the victim's last push %d", got, 10*i+3)
			}
		})
	}
	closeIdle()
}

// Audiences are separate both ways: a pod's ingest token on the readers' path
// (GET /workflow/progress/{id}) is refused, however often it comes — the suite's readers take
// kube-apiserver's audience, so the signature holds and one TokenReview refuses it, remembered
// (with --progress-token-audiences=progress.taskops.dev, as shipped, it is refused here with
// none) — and the readers' tokens are refused at the ingest door without a review (above). The
// refusals spend the pod's budget of new tokens only for the one review: the pod still pushes.
func TestIngestTokenOnTheReadersPath(t *testing.T) {
	const n = 24
	owner := newSAUser(t, "users", "ingest-aud-owner")
	task := createTaskObject(t, "ingest-aud", owner)
	p := runningPod(t, task, "ingest-aud-pod")
	before := tokenReviews.Load()
	answers := flood(clientFrom(freshAddress()), progressURL+readPath(task), n, 4, func(int) []string { return bearer(p.token) })
	reviews := tokenReviews.Load() - before
	codes := countCodes(answers)
	if codes[apiserver.CodeLoginRequired]+codes[apiserver.CodeTooMany] != n {
		t.Errorf("an ingest token on the readers' path, %d times: answers by code %v, want all refused", n, codes)
	}
	if reviews > 1 {
		t.Errorf("%d TokenReviews for one ingest token presented %d times on the readers' path; want at most 1", reviews, n)
	}
	// Refused again and again, it spent the pod's budget of new tokens once, for its one review:
	// the pod still pushes, with that token and with a new one.
	if a := p.push(clientFrom(freshAddress()), "upload", 5, ""); a.code() != apiserver.CodeSuccess {
		t.Errorf("the pod's token at the ingest door, after %d refusals on the readers' path: HTTP %d %.200s (%v)", n, a.status, a.body, a.err)
	}
	if a := p.push(clientFrom(freshAddress()), "upload", 6, p.newToken(t, ingest.Audience)); a.code() != apiserver.CodeSuccess {
		t.Errorf("the pod's new token at the ingest door, after %d refusals on the readers' path: HTTP %d %.200s (%v)", n, a.status, a.body, a.err)
	}
	// And an ingest token of the task's pod cannot read the task through the aggregation layer
	// either: kube-apiserver refuses it (not its audience) before anything reaches the endpoint.
	cs := kubernetes.NewForConfigOrDie(kubeauth.BearerConfig(adminCfg, p.token))
	if _, err := cs.RESTClient().Get().AbsPath("/apis/progress.taskops.dev/v1alpha1/progress/" +
		strings.TrimPrefix(readPath(task), "/workflow/progress/")).DoRaw(context.Background()); err == nil {
		t.Error("an ingest token read the task through the aggregation layer")
	}
}

// A valid pod token pushing where its pod is not a writer, each answered with the envelope and
// nothing kept: task A's pod pushing to task B (403 within A's budget, then 429: refusals are
// not free), to its
// own task with another task's UID (409 within A's budget, then 429), and the pod of a task
// since replaced by one of the same name pushing with the old UID (409) and with the new one
// (403: its Job is not the new task's). Neither task shows the attacker's value, live or in the
// status; task B's pod still pushes; no TokenReview is sent (the token is known).
func TestIngestPodsStayInTheirLane(t *testing.T) {
	const n = 20
	owner := newSAUser(t, "users", "ingest-lane-owner")
	taskA, taskB := createTaskObject(t, "ingest-lane-a", owner), createTaskObject(t, "ingest-lane-b", owner)
	a, b := runningPod(t, taskA, "ingest-lane-a-pod"), runningPod(t, taskB, "ingest-lane-b-pod")
	c := clientFrom(freshAddress())
	for _, p := range []pod{a, b} {
		if got := p.push(c, "upload", 7, ""); got.code() != apiserver.CodeSuccess {
			t.Fatalf("%s's own push: HTTP %d %.200s (%v)", p.obj.Name, got.status, got.body, got.err)
		}
	}
	gomega.NewWithT(t).Eventually(func() int64 { return stored(t, taskB, "upload") }).Should(gomega.Equal(int64(7)), "task B's push in its status")

	before, start := tokenReviews.Load(), time.Now()
	foreign := floodRequests(c, http.MethodPut, b.url(), pushBody(taskB.UID, "upload", 666), n, 4, func(int) []string { return bearer(a.token) })
	codes := countCodes(foreign)
	if codes[apiserver.CodeNoPermission]+codes[apiserver.CodeTooMany] != n || codes[apiserver.CodeNoPermission] == 0 {
		t.Errorf("task A's pod pushing to task B %d times: answers by code %v, want 403 (then 429)", n, codes)
	}
	if most := pushBurst + int(time.Since(start).Seconds()*pushesPerSecond) + 1; codes[apiserver.CodeNoPermission] > most {
		t.Errorf("%d pushes of a pod to another task answered 403; its budget is %d", codes[apiserver.CodeNoPermission], most)
	}
	// Task B's pod is served meanwhile (its own budget); A, once its budget refilled, too.
	if got := b.push(c, "upload", 9, ""); got.code() != apiserver.CodeSuccess {
		t.Errorf("task B's pod while A pushed to B: HTTP %d %.200s (%v)", got.status, got.body, got.err)
	}
	time.Sleep(time.Duration(pushBurst/pushesPerSecond) * time.Second)
	if got := a.push(c, "upload", 8, ""); got.code() != apiserver.CodeSuccess {
		t.Errorf("task A's pod after its pushes to task B: HTTP %d %.200s (%v)", got.status, got.body, got.err)
	}
	start = time.Now()
	// Pushes to its own task with another task's UID are its own budget's: 409 within it.
	wrongUID := floodRequests(c, http.MethodPut, a.url(), pushBody(taskB.UID, "upload", 666), n, 4, func(int) []string { return bearer(a.token) })
	codes = countCodes(wrongUID)
	if codes[apiserver.CodeConflict]+codes[apiserver.CodeTooMany] != n || codes[apiserver.CodeConflict] == 0 {
		t.Errorf("task A's pod pushing task B's UID to task A %d times: answers by code %v, want 409 (then 429)", n, codes)
	}
	if most := pushBurst + int(time.Since(start).Seconds()*pushesPerSecond) + 1; codes[apiserver.CodeConflict] > most {
		t.Errorf("%d pushes of a pod answered 409; its budget is %d", codes[apiserver.CodeConflict], most)
	}
	if reviews := tokenReviews.Load() - before; reviews != 0 {
		t.Errorf("%d TokenReviews for a known token's refused pushes; want none", reviews)
	}
	// Task B's pod still pushes (A's attack took nothing of its budget), and nothing of the
	// attack shows, live or in the status.
	if got := b.push(c, "upload", 8, ""); got.code() != apiserver.CodeSuccess {
		t.Errorf("task B's pod after the attack: HTTP %d %.200s (%v)", got.status, got.body, got.err)
	}
	for _, task := range []*workflowv1alpha1.WorkflowTask{taskA, taskB} {
		if got := shown(t, owner, task, "upload"); got != 8 {
			t.Errorf("%s shows upload %d, want its own pod's 8", task.Name, got)
		}
		gomega.NewWithT(t).Eventually(func() int64 { return stored(t, task, "upload") }).Should(gomega.Equal(int64(8)), task.Name+"'s status")
		gomega.NewWithT(t).Consistently(func() int64 { return stored(t, task, "upload") }, 2*opts.FlushInterval).
			Should(gomega.Equal(int64(8)), task.Name+"'s status never gets the attacker's value")
	}

	// A task replaced by one of the same name: its old pod is no writer of the new one.
	old := createTaskObject(t, "ingest-lane-replaced", owner)
	oldPod := runningPod(t, old, "ingest-lane-replaced-pod")
	if got := oldPod.push(c, "upload", 5, ""); got.code() != apiserver.CodeSuccess {
		t.Fatalf("the old task's pod: HTTP %d %.200s (%v)", got.status, got.body, got.err)
	}
	if err := k8sClient.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() error {
		return mgr.GetCache().Get(context.Background(), client.ObjectKeyFromObject(old), &workflowv1alpha1.WorkflowTask{})
	}).ShouldNot(gomega.Succeed(), "the old task leaves the endpoint's cache")
	replaced := createTaskObject(t, "ingest-lane-replaced", owner)
	if got := oldPod.push(c, "upload", 666, ""); got.code() != apiserver.CodeConflict {
		t.Errorf("the old pod pushing its task's old UID: HTTP %d %.200s (%v), want code 409", got.status, got.body, got.err)
	}
	impostor := pod{task: replaced, obj: oldPod.obj, token: oldPod.token}
	if got := impostor.push(c, "upload", 666, ""); got.code() != apiserver.CodeNoPermission {
		t.Errorf("the old pod pushing the new task's UID: HTTP %d %.200s (%v), want code 403", got.status, got.body, got.err)
	}
	if got := shown(t, owner, replaced, "upload"); got != 1 {
		t.Errorf("the new task shows upload %d, want its own status's 1", got)
	}
	gomega.NewWithT(t).Consistently(func() int64 { return stored(t, replaced, "upload") }, 2*opts.FlushInterval).
		Should(gomega.Equal(int64(1)), "the new task's status never gets the old pod's values")
}

// pushEvery makes p push entry typ from c every interval until stop, a new value each time, and
// counts the pushes served and sent; last is the last value served.
func pushEvery(p pod, c *http.Client, typ string, interval time.Duration, stop <-chan struct{}) (served, sent, last *int64, done <-chan struct{}) {
	served, sent, last = new(int64), new(int64), new(int64)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for v := int64(100); ; v++ {
			*sent++
			if p.push(c, typ, v, "").code() == apiserver.CodeSuccess {
				*served++
				*last = v
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return served, sent, last, ch
}

// progressWrites counts the writes of task's status.progress on kube-apiserver (a watch) until
// the returned stop is called.
func progressWrites(t *testing.T, task *workflowv1alpha1.WorkflowTask) (stop func() int) {
	t.Helper()
	wc, err := client.NewWithWatch(adminCfg, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &workflowv1alpha1.WorkflowTaskList{}, client.InNamespace(task.Namespace),
		client.MatchingFields{"metadata.name": task.Name})
	if err != nil {
		t.Fatal(err)
	}
	var writes int
	var prev []workflowv1alpha1.ProgressEntry
	first := true
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			got, ok := ev.Object.(*workflowv1alpha1.WorkflowTask)
			if !ok {
				continue
			}
			if !first && !equalProgress(prev, got.Status.Progress) {
				writes++
			}
			first, prev = false, got.Status.Progress
		}
	}()
	return func() int {
		w.Stop()
		<-done
		return writes
	}
}

func equalProgress(a, b []workflowv1alpha1.ProgressEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Current != b[i].Current || a[i].Total != b[i].Total {
			return false
		}
	}
	return true
}

// A pod flooding its own task, 8 connections pushing as fast as they are answered for 4 s: its
// pushes served are bounded by its budget (the burst plus 2 a second), every other answer is a
// 429, no TokenReview is sent, and kube-apiserver sees at most one write of the task's
// progress per flush interval. Meanwhile — closed-loop victims — another pod of the same task
// pushing from the flooder's own address (a shared node), a pod of another task, and the
// task's owner reading it as fast as it is answered are all served, every time; afterwards the
// goroutines are back to their baseline.
func TestIngestPodFloodingItsTask(t *testing.T) {
	const workers, window = 8, 4 * time.Second
	owner := newSAUser(t, "users", "ingest-flood-owner")
	task, other := createTaskObject(t, "ingest-flood", owner), createTaskObject(t, "ingest-flood-other", owner)
	flooder, sibling, neighbour := runningPod(t, task, "ingest-flood-flooder"), runningPod(t, task, "ingest-flood-sibling"), runningPod(t, other, "ingest-flood-neighbour")
	attackerIP, neighbourIP, readerIP := freshAddress(), freshAddress(), freshAddress()
	for _, w := range []struct {
		p  pod
		ip []byte
	}{{sibling, attackerIP}, {neighbour, neighbourIP}} {
		if a := w.p.push(clientFrom(w.ip), "upload", 99, ""); a.code() != apiserver.CodeSuccess {
			t.Fatalf("%s's first push: HTTP %d %.200s (%v)", w.p.obj.Name, a.status, a.body, a.err)
		}
	}
	if got := shown(t, owner, task, "upload"); got != 99 {
		t.Fatalf("the owner sees upload %d before the attack, want 99", got)
	}
	closeIdle()
	baseline := runtime.NumGoroutine()
	writes := progressWrites(t, task)
	before, start := tokenReviews.Load(), time.Now()
	stop := make(chan struct{})
	var served, tooMany, other429 atomic.Int64
	var wg sync.WaitGroup
	attacker := sameAddressClient(attackerIP)
	for range workers {
		wg.Go(func() {
			for v := int64(0); time.Since(start) < window; v++ {
				switch a := flooder.push(attacker, "flood", v, ""); a.code() {
				case apiserver.CodeSuccess:
					served.Add(1)
				case apiserver.CodeTooMany:
					tooMany.Add(1)
				default:
					other429.Add(1)
				}
			}
		})
	}
	sibServed, sibSent, sibLast, sibDone := pushEvery(sibling, sameAddressClient(attackerIP), "upload", 600*time.Millisecond, stop)
	nbServed, nbSent, _, nbDone := pushEvery(neighbour, clientFrom(neighbourIP), "upload", 600*time.Millisecond, stop)
	reads := closedLoop(t, readerIP, 2, window, func(c *http.Client) bool {
		return send(c, progressURL+readPath(task), "Authorization", "Bearer "+owner.token).code() == apiserver.CodeSuccess
	})
	wg.Wait()
	close(stop)
	<-sibDone
	<-nbDone
	elapsed := time.Since(start)
	reviews := tokenReviews.Load() - before
	if most := int64(pushBurst + int(elapsed.Seconds()*pushesPerSecond) + 1); served.Load() > most || served.Load() == 0 {
		t.Errorf("the flooding pod: %d pushes served in %s; its budget allows %d", served.Load(), elapsed.Round(time.Millisecond), most)
	}
	if other429.Load() != 0 || tooMany.Load() == 0 {
		t.Errorf("the flooding pod's other answers: %d × 429, %d neither 0 nor 429; want all 429", tooMany.Load(), other429.Load())
	}
	if *sibServed != *sibSent || *nbServed != *nbSent {
		t.Errorf("pushes served during the flood: the flooder's sibling on its address %d of %d, a pod of another task %d of %d; want all",
			*sibServed, *sibSent, *nbServed, *nbSent)
	}
	if reads.failed != 0 || len(reads.latencies) == 0 {
		t.Errorf("the owner reading the flooded task in a closed loop: %d of %d reads failed", reads.failed, len(reads.latencies))
	}
	if reviews > 4 {
		t.Errorf("%d TokenReviews during the flood; want at most one per token in use (4)", reviews)
	}
	time.Sleep(opts.FlushInterval + time.Second) // the last values written
	nWrites := writes()
	if most := int(elapsed/opts.FlushInterval) + 3; nWrites > most {
		t.Errorf("%d writes of the task's progress on kube-apiserver in %s (%d pushes served); at most one per flush interval (%d)",
			nWrites, elapsed.Round(time.Millisecond), served.Load()+*sibServed, most)
	}
	if got := shown(t, owner, task, "upload"); got != *sibLast {
		t.Errorf("the owner sees upload %d, want the sibling's last push %d", got, *sibLast)
	}
	t.Logf("flooder: %d served, %d × 429 in %s; sibling %d/%d, neighbour %d/%d served; owner %d reads; %d TokenReviews; %d progress writes",
		served.Load(), tooMany.Load(), elapsed.Round(time.Millisecond), *sibServed, *sibSent, *nbServed, *nbSent, len(reads.latencies), reviews, nWrites)
	closeIdle()
	settled(t, baseline, 20)
}

// A pod churning new tokens for itself (TokenRequest after TokenRequest, each pushed once): the
// door reviews at most its new-token budget of them (the budget of its subject and pod UID),
// answers the rest 429 without a review, from any address; the first token it accepted still
// pushes; and another pod of the same task — the same ServiceAccount — still gets its new token
// reviewed and its push served.
func TestIngestPodChurningNewTokens(t *testing.T) {
	const extra = 6
	owner := newSAUser(t, "users", "ingest-churn-owner")
	task := createTaskObject(t, "ingest-churn", owner)
	churner, sibling := runningPod(t, task, "ingest-churn-churner"), runningPod(t, task, "ingest-churn-sibling")
	c := clientFrom(freshAddress())
	accepted, tooMany := 0, 0
	var first string
	before := tokenReviews.Load()
	for i := range opts.NewTokenBurst + extra {
		token := churner.newToken(t, ingest.Audience)
		if i%2 == 1 {
			c = clientFrom(freshAddress()) // the budget is the pod's, not its address's
		}
		switch a := churner.push(c, "upload", int64(i), token); a.code() {
		case apiserver.CodeSuccess:
			accepted++
			if first == "" {
				first = token
			}
		case apiserver.CodeTooMany:
			tooMany++
		default:
			t.Fatalf("a new token of the churning pod: HTTP %d %.200s (%v)", a.status, a.body, a.err)
		}
	}
	reviews := tokenReviews.Load() - before
	if accepted > opts.NewTokenBurst+1 || tooMany < extra-1 || reviews > int64(opts.NewTokenBurst)+1 {
		t.Errorf("%d new tokens of one pod: %d accepted, %d answered 429, %d TokenReviews; want at most its budget (%d) accepted and reviewed",
			opts.NewTokenBurst+extra, accepted, tooMany, reviews, opts.NewTokenBurst)
	}
	t.Logf("%d new tokens of one pod: %d accepted, %d answered 429, %d TokenReviews", opts.NewTokenBurst+extra, accepted, tooMany, reviews)
	time.Sleep(time.Second) // its budget of pushes (spent by the accepted ones) refills
	if a := churner.push(c, "upload", 100, first); a.code() != apiserver.CodeSuccess {
		t.Errorf("the churning pod's first token, accepted before its budget ran out: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	before = tokenReviews.Load()
	if a := sibling.push(c, "sibling", 1, sibling.newToken(t, ingest.Audience)); a.code() != apiserver.CodeSuccess {
		t.Errorf("another pod of the task (the same ServiceAccount) with a new token: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	if reviews := tokenReviews.Load() - before; reviews != 1 {
		t.Errorf("%d TokenReviews for the sibling's new token; want 1", reviews)
	}
}

// repeatReader reads b forever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// hugePush sends a push of size bytes (a valid start, then one endless identifier) with token,
// streamed: the client holds none of it.
func hugePush(c *http.Client, p pod, size int64) answer {
	prefix := `{"taskUID":"` + string(p.task.UID) + `","entries":[{"type":"upload","current":666,"total":1000,"identifier":"`
	body := io.MultiReader(strings.NewReader(prefix), io.LimitReader(repeatReader('x'), size-int64(len(prefix))))
	req, err := http.NewRequest(http.MethodPut, p.url(), body)
	if err != nil {
		return answer{err: err}
	}
	req.ContentLength = size
	h := bearer(p.token)
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: got, err: err}
}

// attackerAndSibling is a task named name of its own owner with two running pods, the attacker
// and a sibling, that each pushed upload 3 from ip, a fresh address (their connections closed
// since).
func attackerAndSibling(t *testing.T, name string) (owner saUser, task *workflowv1alpha1.WorkflowTask, attacker, sibling pod, ip net.IP) {
	t.Helper()
	owner = newSAUser(t, "users", name+"-owner")
	task = createTaskObject(t, name, owner)
	attacker, sibling = runningPod(t, task, name+"-attacker"), runningPod(t, task, name+"-sibling")
	ip = freshAddress()
	for _, p := range []pod{attacker, sibling} {
		if a := p.push(clientFrom(ip), "upload", 3, ""); a.code() != apiserver.CodeSuccess {
			t.Fatalf("%s's first push: HTTP %d %.200s (%v)", p.obj.Name, a.status, a.body, a.err)
		}
	}
	closeIdle()
	return owner, task, attacker, sibling, ip
}

// Oversized bodies: a pod sending 24 pushes of 10 MiB each, 8 at a time, gets each cut at
// ingest.MaxBodyBytes (40001) or refused past its budget (429) — or its connection closed while
// it was still sending — and nothing of them is kept; afterwards the live heap after GC is
// within 10 MiB of its baseline and the goroutines are back to theirs; another pod of the task
// on the same address pushes meanwhile.
func TestIngestOversizedBodies(t *testing.T) {
	const n, workers, size = 24, 8, 10 << 20
	owner, task, attacker, sibling, ip := attackerAndSibling(t, "ingest-huge")
	baseGoroutines, baseHeap := runtime.NumGoroutine(), liveHeap()
	answers := make([]answer, n)
	work := make(chan int)
	var wg sync.WaitGroup
	c := sameAddressClient(ip)
	for range workers {
		wg.Go(func() {
			for i := range work {
				answers[i] = hugePush(c, attacker, size)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	siblingPush := sibling.push(sameAddressClient(ip), "upload", 4, "")
	wg.Wait()
	codes, cut := countCodes(answers), 0
	for _, a := range answers {
		if a.code() == apiserver.CodeParamErr {
			cut++
		}
	}
	if codes[apiserver.CodeSuccess] != 0 || codes[apiserver.CodeParamErr]+codes[apiserver.CodeTooMany]+codes[-1] != n {
		t.Errorf("%d pushes of 10 MiB: answers by code %v (-1: connection closed while sending); want none kept", n, codes)
	}
	if siblingPush.code() != apiserver.CodeSuccess {
		t.Errorf("the sibling on the attacker's address: HTTP %d %.200s (%v)", siblingPush.status, siblingPush.body, siblingPush.err)
	}
	if got := shown(t, owner, task, "upload"); got != 4 {
		t.Errorf("the owner sees upload %d, want the sibling's 4", got)
	}
	closeIdle()
	settled(t, baseGoroutines, 20)
	if heap := liveHeap(); heap > baseHeap+10<<20 {
		t.Errorf("live heap %d MiB after %d pushes of 10 MiB, baseline %d MiB: more than 10 MiB left behind", heap>>20, n, baseHeap>>20)
	}
	t.Logf("%d pushes of 10 MiB: answers by code %v", n, codes)
}

// Slow bodies: 16 connections from one address send a push's headers with a pod's valid token
// and then trickle the body a byte every 200 ms (slowloris on the body); 16 more do the same
// with junk tokens. The listener closes every one of them within 3× its read timeout however
// long they trickle, nothing of them is kept, and another pod of the task on the same address
// pushes meanwhile.
func TestIngestSlowBodies(t *testing.T) {
	const slow = 16
	owner, task, attacker, sibling, ip := attackerAndSibling(t, "ingest-slow")
	baseline := runtime.NumGoroutine()
	body := pushBody(task.UID, "upload", 666)
	for _, c := range []struct{ name, token string }{
		{"a valid pod token", attacker.token},
		{"junk tokens", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conns := dialFrom(t, ip, progressURL, slow)
			var tlsConns []net.Conn
			for _, raw := range conns {
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test endpoint
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				tlsConns = append(tlsConns, tc)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, conn := range tlsConns {
				token := c.token
				if token == "" {
					token = junkJWT(int(junkSeq.Add(1)), 300)
				}
				head := "PUT " + ingest.Path(task.Namespace, task.Name) + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
					"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
				if _, err := conn.Write([]byte(head)); err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					for _, b := range body {
						select {
						case <-stop:
							return
						case <-time.After(200 * time.Millisecond):
						}
						if _, err := conn.Write([]byte{b}); err != nil {
							return
						}
					}
				})
			}
			if a := sibling.push(sameAddressClient(ip), "upload", 4, ""); a.code() != apiserver.CodeSuccess {
				t.Errorf("the sibling on the attacker's address: HTTP %d %.200s (%v)", a.status, a.body, a.err)
			}
			if closed := closedByPeer(tlsConns, 3*opts.Timeouts.Read); closed != slow {
				t.Errorf("%d of %d trickling bodies closed within 3× the read timeout (%s)", closed, slow, opts.Timeouts.Read)
			}
			close(stop)
			wg.Wait()
			for _, conn := range tlsConns {
				conn.Close()
			}
		})
	}
	if got := shown(t, owner, task, "upload"); got != 4 {
		t.Errorf("the owner sees upload %d, want the sibling's 4", got)
	}
	closeIdle()
	settled(t, baseline, 20)
}

// The attacker on the victim's own address: 96 connections from the address a task's pod pushes
// from (more than the address may hold: 64), each sending unique junk tokens to the pod's push
// path as fast as it is answered, spend the address's budget of failed logins (every answer past
// it a 429 after the tarpit, at most that budget reviewed). Meanwhile, on that same address,
// the pod pushes every 600 ms with the token it has and once with a new one (the kubelet
// rotated it), and the task's owner reads it in a closed loop: every push and every read is
// served, because a token the door verifies never spends the address's budget and an
// authenticated connection outlives the junk ones.
func TestIngestAttackerOnTheVictimsAddress(t *testing.T) {
	const attackConns, window = 96, 4 * time.Second
	owner := newSAUser(t, "users", "ingest-shared-owner")
	task := createTaskObject(t, "ingest-shared", owner)
	victim := runningPod(t, task, "ingest-shared-victim")
	ip := freshAddress()
	if a := victim.push(clientFrom(ip), "upload", 3, ""); a.code() != apiserver.CodeSuccess {
		t.Fatalf("the victim's first push: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	if got := send(clientFrom(ip), progressURL+readPath(task), "Authorization", "Bearer "+owner.token); got.code() != apiserver.CodeSuccess {
		t.Fatalf("the owner's first read: HTTP %d %.200s (%v)", got.status, got.body, got.err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before, start := tokenReviews.Load(), time.Now()
	var refusals, tooMany, others atomic.Int64
	var wg sync.WaitGroup
	body := pushBody(task.UID, "upload", 666)
	for range attackConns {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxConnsPerHost: 1, //nolint:gosec // self-signed test endpoint
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				a := sendRequest(c, http.MethodPut, victim.url(), body, bearer(junkJWT(int(junkSeq.Add(1)), 300))...)
				switch {
				case ctx.Err() != nil && a.err != nil:
				case a.code() == apiserver.CodeLoginRequired:
					refusals.Add(1)
				case a.code() == apiserver.CodeTooMany:
					tooMany.Add(1)
				case a.err == nil: // an error is a connection the listener closed for a newcomer
					others.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Second) // the address's budget spent
	stop := make(chan struct{})
	pushed, sent, last, done := pushEvery(victim, sameAddressClient(ip), "upload", 600*time.Millisecond, stop)
	rotated := make(chan answer, 1)
	go func() {
		time.Sleep(window / 2)
		rotated <- victim.push(sameAddressClient(ip), "rotated", 1, victim.newToken(t, ingest.Audience))
	}()
	reads := closedLoop(t, ip, 2, window, func(c *http.Client) bool {
		return send(c, progressURL+readPath(task), "Authorization", "Bearer "+owner.token).code() == apiserver.CodeSuccess
	})
	close(stop)
	<-done
	cancel()
	wg.Wait()
	elapsed, reviews := time.Since(start), tokenReviews.Load()-before
	if *pushed != *sent {
		t.Errorf("the victim pod's pushes on the attacker's address: %d of %d served", *pushed, *sent)
	}
	if a := <-rotated; a.code() != apiserver.CodeSuccess {
		t.Errorf("the victim pod's new token on the attacker's address: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	if reads.failed != 0 {
		t.Errorf("the owner reading on the attacker's address: %d of %d reads failed", reads.failed, len(reads.latencies))
	}
	refill := int64(elapsed.Seconds()*opts.FailedLoginsPerSecond) + 1
	if most := int64(opts.FailedLoginBurst) + refill + 2; reviews > most {
		t.Errorf("%d TokenReviews in %s (%d junk refused, %d × 429); the address's budget and the victim's new token allow %d",
			reviews, elapsed.Round(time.Millisecond), refusals.Load(), tooMany.Load(), most)
	}
	if refusals.Load() > int64(opts.FailedLoginBurst)+refill || others.Load() != 0 || tooMany.Load() == 0 {
		t.Errorf("the attacker's answers: %d × 401, %d × 429, %d other; want at most the address's budget (%d) of 401s, then 429s",
			refusals.Load(), tooMany.Load(), others.Load(), int64(opts.FailedLoginBurst)+refill)
	}
	if got := shown(t, owner, task, "upload"); got != *last {
		t.Errorf("the owner sees upload %d, want the victim's last push %d", got, *last)
	}
	t.Logf("attacker: %d × 401, %d × 429 in %s; victim pod %d/%d pushes served; owner %d reads, %d failed; %d TokenReviews",
		refusals.Load(), tooMany.Load(), elapsed.Round(time.Millisecond), *pushed, *sent, len(reads.latencies), reads.failed, reviews)
}

// A pod over its push budget holds no connection a newcomer cannot take: a pod flooding its own
// task from as many addresses as fill the listener (every address at its bound of connections,
// each pushing as fast as it is answered, nearly every push past the pod's budget and so
// waiting the tarpit) does not keep 20 newcomers from other addresses out — each is served —
// and each of the pod's connections gets at most one answer per tarpit.
func TestIngestFloodCannotFillTheListener(t *testing.T) {
	const newcomers = 20
	owner := newSAUser(t, "users", "ingest-fill-owner")
	task := createTaskObject(t, "ingest-fill-"+strings.ToLower(randomID(5)), owner)
	flooder := runningPod(t, task, task.Name+"-flooder")
	if a := send(clientFrom(freshAddress()), progressURL+readPath(task), "Authorization", "Bearer "+owner.token); a.code() != apiserver.CodeSuccess {
		t.Fatalf("the owner's first read: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var answers atomic.Int64
	var wg sync.WaitGroup
	addresses := opts.MaxConnections / opts.MaxConnectionsPerAddress
	conns := addresses * opts.MaxConnectionsPerAddress
	start := time.Now()
	for range addresses {
		ip := freshAddress()
		for range opts.MaxConnectionsPerAddress {
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxConnsPerHost: 1, //nolint:gosec // self-signed test endpoint
				DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			wg.Go(func() {
				defer tr.CloseIdleConnections()
				for ctx.Err() == nil {
					if a := flooder.push(c, "upload", 1, ""); a.err == nil {
						answers.Add(1)
					}
				}
			})
		}
	}
	// Every connection of the listener the flooder's, each through its first tarpits.
	gomega.NewWithT(t).Eventually(answers.Load, 20*time.Second, 100*time.Millisecond).Should(gomega.BeNumerically(">=", 2*conns))
	served := 0
	var failures []string
	for range newcomers {
		a := send(sameAddressClient(freshAddress()), progressURL+readPath(task), "Authorization", "Bearer "+owner.token)
		if a.code() == apiserver.CodeSuccess {
			served++
		} else if len(failures) < 3 {
			failures = append(failures, fmt.Sprintf("HTTP %d %v", a.status, a.err))
		}
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d of %d newcomers served (%v); the flooding pod's %d connections got %d answers in %s", served, newcomers, failures, conns, answers.Load(), elapsed.Round(time.Millisecond))
	if served != newcomers {
		t.Errorf("%d of %d newcomers served while a pod over its budget pushed from %d connections on %d addresses: %v", served, newcomers, conns, addresses, failures)
	}
	if most := int64(pushBurst) + int64(conns)*(int64(elapsed/time.Second)+2); answers.Load() > most {
		t.Errorf("%d answers to the flooding pod's %d connections in %s; paced, at most %d", answers.Load(), conns, elapsed.Round(time.Millisecond), most)
	}
	closeIdle()
}
