package apf_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// Response headers by which kube-apiserver says how it classified a request.
const (
	headerFlowSchema    = "X-Kubernetes-Pf-Flowschema-Uid"
	headerPriorityLevel = "X-Kubernetes-Pf-Prioritylevel-Uid"
)

// classified records, per request (method and path), the flow schema and priority level UIDs
// kube-apiserver answered with.
type classified struct {
	mu   sync.Mutex
	seen map[string][2]string
}

func (c *classified) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil {
				c.mu.Lock()
				c.seen[r.Method+" "+r.URL.Path] = [2]string{resp.Header.Get(headerFlowSchema), resp.Header.Get(headerPriorityLevel)}
				c.mu.Unlock()
			}
			return resp, err
		})
	})
	return cfg
}

func (c *classified) get(key string) [2]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[key]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func uidOf(t *testing.T, obj client.Object, name string) string {
	t.Helper()
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	return string(obj.GetUID())
}

// A reporter's read and apply of its task's status, with a real token of the task's runner,
// are served at the workflowtask-progress priority level (flow schema
// workflowtask-progress-writes); the operator's status writes at workload-high (flow schema
// workflowtask-operator); an administrator's as before. Without config/apf all three land in
// the cluster's default levels, and the test fails.
func TestProgressWritesHaveTheirOwnPriorityLevel(t *testing.T) {
	ctx := context.Background()
	progressFS := uidOf(t, &flowcontrolv1.FlowSchema{}, "workflowtask-progress-writes")
	progressPL := uidOf(t, &flowcontrolv1.PriorityLevelConfiguration{}, "workflowtask-progress")
	operatorFS := uidOf(t, &flowcontrolv1.FlowSchema{}, "workflowtask-operator")
	workloadHigh := uidOf(t, &flowcontrolv1.PriorityLevelConfiguration{}, "workload-high")

	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apf"}}); err != nil {
		t.Fatal(err)
	}
	task := testutil.MakeTask("storm", "apf").Obj()
	if err := k8sClient.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(task), task)).To(gomega.Succeed())
		g.Expect(task.Status.Phase).To(gomega.Equal(workflowv1alpha1.TaskPhaseQueued)) // the runner identity exists
	}).Should(gomega.Succeed())
	token, err := testenv.Token(ctx, adminCfg, "apf", "storm-runner")
	if err != nil {
		t.Fatal(err)
	}

	seen := &classified{seen: map[string][2]string{}}
	statusPath := "/apis/workflow.taskops.dev/v1alpha1/namespaces/apf/workflowtasks/storm/status"
	r, err := progress.New(progress.Options{Config: seen.wrap(testenv.BearerConfig(adminCfg, token)), Namespace: "apf", Task: "storm",
		Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.Set("upload", 1, 4)
	flushCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	g.Eventually(func() error { return r.Flush(flushCtx) }).Should(gomega.Succeed()) // (the RoleBinding reaching the authorizer)
	if err := r.Close(flushCtx); err != nil {
		t.Fatal(err)
	}
	for _, req := range []string{"GET " + statusPath, "PATCH " + statusPath} {
		if got := seen.get(req); got != [2]string{progressFS, progressPL} {
			t.Errorf("the runner's %s: flow schema/priority level %v, want workflowtask-progress-writes/workflowtask-progress %v", req, got, [2]string{progressFS, progressPL})
		}
	}

	operatorCfg, err := testenv.ManagerConfig(ctx, adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	for who, c := range map[string]struct {
		cfg     *rest.Config
		fs, pl  string
		exactFS bool
	}{
		"the operator":     {operatorCfg, operatorFS, workloadHigh, true},
		"an administrator": {adminCfg, "", "", false},
	} {
		seen := &classified{seen: map[string][2]string{}}
		cl, err := client.New(seen.wrap(c.cfg), client.Options{Scheme: testenv.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		got := &workflowv1alpha1.WorkflowTask{}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(task), got); err != nil {
			t.Fatal(err)
		}
		if err := cl.Status().Patch(ctx, got, client.RawPatch(types.MergePatchType, []byte(`{}`))); err != nil {
			t.Fatalf("%s: status patch: %v", who, err)
		}
		gotClass := seen.get("PATCH " + statusPath)
		if c.exactFS && gotClass != [2]string{c.fs, c.pl} {
			t.Errorf("%s's status patch: %v, want workflowtask-operator/workload-high %v", who, gotClass, [2]string{c.fs, c.pl})
		}
		if c.exactFS { // all its requests, not only on tasks (its leader-election Lease: losing it under a storm stops the operator)
			if err := cl.Get(ctx, client.ObjectKeyFromObject(task), &batchv1.Job{}); err != nil {
				t.Fatal(err)
			}
			if got := seen.get("GET /apis/batch/v1/namespaces/apf/jobs/storm"); got != [2]string{c.fs, c.pl} {
				t.Errorf("%s's read of a Job: %v, want workflowtask-operator/workload-high %v", who, got, [2]string{c.fs, c.pl})
			}
		}
		if !c.exactFS && (gotClass[0] == progressFS || gotClass[0] == operatorFS || gotClass[1] == progressPL) {
			t.Errorf("%s's status patch was classified by config/apf: %v", who, gotClass)
		}
	}
}
