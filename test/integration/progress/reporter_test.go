package progress_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

func closeWithin(t testing.TB, r *progress.Reporter, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.Close(ctx)
}

// 4 reporters (4 "pods") with 8 goroutines each, every goroutine on its own type, 1,000 updates
// each: the task ends with every type at its last value. Then one pod deletes one of its types:
// only that entry goes. Written directly and pushed.
func TestParallelWritersLoseNothing(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		task := newTask(t, "parallel")
		const pods, perPod, updates = 4, 8, 1000
		targets := make([]progress.Options, pods)
		reporters := make([]*progress.Reporter, pods)
		for p := range pods {
			targets[p] = m.target(t, task, fmt.Sprintf("parallel-pod-%d", p))
			opts := targets[p]
			opts.FieldManager, opts.Interval = fmt.Sprintf("workflowtask-progress/pod-%d", p), 50*time.Millisecond
			r, err := progress.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			reporters[p] = r
		}
		var wg sync.WaitGroup
		for p, r := range reporters {
			for g := range perPod {
				wg.Go(func() {
					typ := fmt.Sprintf("upload_single_%d", p*perPod+g)
					r.SetIdentifier(typ, fmt.Sprintf("/dst/pod-%d/file-%d", p, g))
					for i := 1; i <= updates; i++ {
						r.Set(typ, int64(i), updates)
						if i%100 == 0 {
							time.Sleep(time.Millisecond) // spread over several write intervals
						}
					}
				})
			}
		}
		wg.Wait()
		for _, r := range reporters {
			if err := closeWithin(t, r, 30*time.Second); err != nil {
				t.Fatalf("final write: %v", err)
			}
		}
		settled(t, task, func(g gomega.Gomega, entries map[string]workflowv1alpha1.ProgressEntry) {
			g.Expect(entries).To(gomega.HaveLen(pods * perPod))
			for i := range pods * perPod {
				e := entries[fmt.Sprintf("upload_single_%d", i)]
				g.Expect(e.Current == updates && e.Total == updates && e.Identifier == fmt.Sprintf("/dst/pod-%d/file-%d", i/perPod, i%perPod) &&
					!e.UpdateTime.IsZero()).To(gomega.BeTrue(), "entry %d = %+v", i, e)
			}
		})

		// Pod 0 deletes one of its types: that entry goes, everyone else's stays.
		opts := targets[0]
		opts.FieldManager = "workflowtask-progress/pod-0"
		r, err := progress.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		for gi := range perPod {
			typ := fmt.Sprintf("upload_single_%d", gi)
			r.Set(typ, updates, updates)
			r.SetIdentifier(typ, fmt.Sprintf("/dst/pod-0/file-%d", gi))
		}
		if err := r.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.Delete("upload_single_0")
		if err := closeWithin(t, r, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		settled(t, task, func(g gomega.Gomega, entries map[string]workflowv1alpha1.ProgressEntry) {
			g.Expect(entries).NotTo(gomega.HaveKey("upload_single_0"))
			g.Expect(entries).To(gomega.HaveLen(pods*perPod - 1))
		})
	})
}

// 100,000 updates over about 3 s make at most ceil(3 s / interval) + 2 writes, counted at the
// HTTP transport, and the final values arrive.
func TestWritesAreCoalesced(t *testing.T) {
	task := newTask(t, "coalesced")
	cfg, ct := counting(runnerConfig(t, task))
	const interval = time.Second
	r, err := progress.New(progress.Options{Config: cfg, Namespace: task.Namespace, Task: task.Name, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const total = 100_000
	for i := 1; i <= total; i++ {
		r.Set("upload", int64(i), total)
		r.Set("upload_count", int64(i/1000), total/1000)
		if i%1000 == 0 {
			time.Sleep(30 * time.Millisecond) // 100 batches: ~3 s
		}
	}
	elapsed := time.Since(start)
	if err := closeWithin(t, r, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	bound := int64(math.Ceil(elapsed.Seconds()/interval.Seconds())) + 2
	if got := ct.writes.Load(); got > bound || got < 2 {
		t.Errorf("%d writes for %d updates over %s; want 2..%d", got, 2*total, elapsed.Round(time.Millisecond), bound)
	}
	t.Logf("%d updates over %s: %d writes (bound %d)", 2*total, elapsed.Round(time.Millisecond), ct.writes.Load(), bound)
	// Every apply counted at the transport is an attempt in Stats (a refused one too: the first
	// may meet the runner's RoleBinding not yet in the authorizer's cache); the last landed.
	if s := r.Stats(); s.OK < 2 || s.OK > ct.writes.Load() || s.OK+s.Conflict+s.Throttled+s.Error < ct.writes.Load() || s.Bytes < s.OK*40 {
		t.Errorf("Stats %+v; want at least 2 ok of %d writes counted at the transport, and their bytes", s, ct.writes.Load())
	}
	entries := progressOf(gomega.NewWithT(t), task)
	if entries["upload"].Current != total || entries["upload_count"].Current != total/1000 {
		t.Errorf("final values not written: %+v", entries)
	}
}

// 503 and 429 answers are retried with backoff; nothing is lost.
func TestTransientErrorsAreRetried(t *testing.T) {
	for _, code := range []int{503, 429} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			task := newTask(t, fmt.Sprintf("flaky-%d", code))
			cfg, ct := counting(runnerConfig(t, task))
			ct.failWith = code
			ct.failFirst.Store(3)
			r, err := progress.New(progress.Options{Config: cfg, Namespace: task.Namespace, Task: task.Name,
				Interval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			r.Set("download", 42, 100)
			gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
				g.Expect(progressOf(g, task)["download"].Current).To(gomega.Equal(int64(42)))
			}).Should(gomega.Succeed())
			if got := ct.writes.Load(); got < 4 {
				t.Errorf("%d attempts; want the 3 failures and a success", got)
			}
			if err := closeWithin(t, r, 10*time.Second); err != nil {
				t.Errorf("Close after recovery: %v", err)
			}
			// Read after Close: the server can show the write before the reporter's goroutine
			// has counted the answer to it.
			s := r.Stats()
			failed := map[int]int64{503: s.Error, 429: s.Throttled}[code]
			if failed < 3 || s.OK < 1 {
				t.Errorf("Stats %+v; want at least 3 attempts counted as HTTP %d and a success", s, code)
			}
		})
	}
}

// A 429 that asks for a delay (API Priority and Fairness: Retry-After) is honoured: the retries
// wait for it instead of the short backoff, the interval stretches while the server pushes back
// and comes back once writes go well; the value lands.
func TestThrottlingIsHonoured(t *testing.T) {
	task := newTask(t, "throttled")
	cfg, ct := counting(runnerConfig(t, task))
	ct.failWith, ct.retryAfter = http.StatusTooManyRequests, 1
	ct.failFirst.Store(2)
	const interval = 20 * time.Millisecond
	r, err := progress.New(progress.Options{Config: cfg, Namespace: task.Namespace, Task: task.Name,
		Interval: interval, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 1, 100)
	// Within the first second at most the first attempt and one retry fit (both refused); with
	// the 20–100 ms backoff alone there would be both refusals and the success already.
	time.Sleep(time.Second)
	if got := ct.writes.Load(); got > 2 {
		t.Errorf("%d attempts in the first second after a 429 asking for 1 s; want at most 2", got)
	}
	if s := r.Stats(); s.Interval <= interval {
		t.Errorf("interval %s after two 429s; want it stretched beyond %s", s.Interval, interval)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(progressOf(g, task)["upload"].Current).To(gomega.Equal(int64(1)))
	}).Should(gomega.Succeed())
	for i := int64(2); i <= 20; i++ { // writes that go well bring the interval back
		r.Set("upload", i, 100)
		time.Sleep(2 * interval)
	}
	if err := closeWithin(t, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Throttled != 2 || s.Interval != interval {
		t.Errorf("Stats %+v; want the 2 throttled attempts counted and the interval back at %s", s, interval)
	}
	if got := progressOf(g, task)["upload"].Current; got != 20 {
		t.Errorf("final value %d, want 20", got)
	}
}

// A runner's token cannot write another task, directly or pushed (a pod of one task pushing to
// another): the 403 comes back as a clear error, and Close says the final state was not written.
func TestOtherTaskIsForbidden(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		mine := newTask(t, "mine")
		other := newTask(t, "other")
		opts := m.target(t, mine, "mine-pod")
		opts.Namespace, opts.Task = other.Namespace, other.Name
		if opts.Ingest != nil { // the pod knows the other task's UID
			opts.UID = other.UID
		}
		r, err := progress.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		r.Set("upload", 1, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = r.Flush(ctx)
		if !apierrors.IsForbidden(err) {
			t.Fatalf("Flush = %v, want Forbidden", err)
		}
		wants := []string{other.Namespace + "/" + other.Name, "forbidden", "mine-runner"}
		if m.name != direct.name {
			wants = []string{other.Namespace + "/" + other.Name, "forbidden", apiserver.MsgNoPermission}
		}
		for _, want := range wants {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if err := closeWithin(t, r, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "NOT written") {
			t.Errorf("Close = %v, want 'final state NOT written'", err)
		}
		time.Sleep(2 * ingestFlushInterval)
		if len(progressOf(gomega.NewWithT(t), other)) != 0 {
			t.Error("the other task got progress")
		}
	})
}

// The API server stopped and started again under a running reporter: updates never wait, and
// the latest values arrive after the restart.
func TestAPIServerRestart(t *testing.T) {
	task := newTask(t, "restart")
	r, err := progress.New(progress.Options{Config: runnerConfig(t, task), Namespace: task.Namespace, Task: task.Name,
		Interval: 100 * time.Millisecond, MaxBackoff: time.Second, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 1, 1000)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { g.Expect(progressOf(g, task)["upload"].Current).To(gomega.Equal(int64(1))) }).Should(gomega.Succeed())

	apiServer := env.ControlPlane.GetAPIServer()
	if err := apiServer.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process kube-apiserver to stop") {
		t.Fatal(err) // a timeout means it was killed: stopped all the same
	}
	// While it is down, 200,000 updates return (the loop below finishing is the proof: an
	// update that waited for the network would wait here until the restart below).
	for i := 2; i <= 200_000; i++ {
		r.Set("upload", int64(i%1000), 1000)
	}
	r.Set("upload", 999, 1000)
	r.Set("upload_count", 7, 9)
	time.Sleep(2 * time.Second) // let writes fail against the stopped server
	if r.Err() == nil {
		t.Error("no write failed while the API server was down")
	}
	if err := apiServer.Start(); err != nil {
		t.Fatal(err)
	}
	if err := closeWithin(t, r, 60*time.Second); err != nil {
		t.Fatalf("final state after restart: %v", err)
	}
	g.Eventually(func(g gomega.Gomega) {
		e := progressOf(g, task)
		g.Expect(e["upload"].Current).To(gomega.Equal(int64(999)))
		g.Expect(e["upload_count"].Current).To(gomega.Equal(int64(7)))
	}).Should(gomega.Succeed())
}

// A token rotated by the kubelet (the projected token file rewritten) keeps working, even once
// the old token is no longer valid.
func TestRotatedTokenFileKeepsWorking(t *testing.T) {
	ctx := context.Background()
	task := newTask(t, "rotating")
	sa := task.Name + "-runner"
	boundToken := func(secret string) string {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: task.Namespace}}
		if err := k8sClient.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		tok, err := testenv.BoundToken(ctx, adminCfg, task.Namespace, sa, s)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	oldToken := boundToken("old")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(oldToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(adminCfg)
	cfg.BearerTokenFile = tokenFile
	r, err := progress.New(progress.Options{Config: cfg, Namespace: task.Namespace, Task: task.Name,
		Interval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("relocate", 1, 10)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { g.Expect(progressOf(g, task)["relocate"].Current).To(gomega.Equal(int64(1))) }).Should(gomega.Succeed())

	// Rotate: a new token in the file, the old one invalidated (its bound Secret deleted).
	if err := os.WriteFile(tokenFile, []byte(boundToken("new")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "old", Namespace: task.Namespace}}); err != nil {
		t.Fatal(err)
	}
	old, err := client.New(testenv.BearerConfig(adminCfg, oldToken), client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	g.Eventually(func() bool {
		err := old.SubResource("status").Get(ctx, task, task.DeepCopy())
		return apierrors.IsUnauthorized(err)
	}).Should(gomega.BeTrue(), "the old token is rejected")
	r.Set("relocate", 10, 10)
	g.Eventually(func(g gomega.Gomega) { g.Expect(progressOf(g, task)["relocate"].Current).To(gomega.Equal(int64(10))) }).Should(gomega.Succeed())
	if err := closeWithin(t, r, 10*time.Second); err != nil {
		t.Error(err)
	}
}
