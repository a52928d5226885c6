package endpoint_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// certUser is an envtest user with a client certificate; through the aggregator the endpoint
// sees it by front-proxy headers.
func certUser(t *testing.T, name string, groups ...string) *envtest.AuthenticatedUser {
	t.Helper()
	u, err := env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// raw GETs a path through kube-apiserver (the aggregation layer) as the user.
func raw(t *testing.T, u *envtest.AuthenticatedUser, path string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(u.Config())
	if err != nil {
		t.Fatal(err)
	}
	b, err := cs.RESTClient().Get().AbsPath(path).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET %s as %s: %v (%s)", path, "user", err, b)
	}
	validateBody(t, b)
	return string(b)
}

func TestAggregatedDiscovery(t *testing.T) {
	u := certUser(t, "discoverer")
	dc, err := discovery.NewDiscoveryClientForConfig(u.Config())
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion("progress.taskops.dev/v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.APIResources {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"progress", "tasks"}, names); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}

// Through kube-apiserver: by ID and by namespace/name; owner, stranger, admin by group.
func TestAggregated(t *testing.T) {
	owner := certUser(t, "agg-alice", "devs")
	stranger := certUser(t, "agg-bob", "devs")
	admin := certUser(t, "agg-carol", "progress-admins")
	bindProgressAdminGroup(t, "progress-admins")
	task := createTaskWithProgress(t, testutil.MakeTask("via-aggregator", "agg").Owner("agg-alice"),
		entry("extract_count", 3, 9, ""), entry("extract_size", 1048576, 4194304, ""))
	byID := "/apis/progress.taskops.dev/v1alpha1/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	byName := "/apis/progress.taskops.dev/v1alpha1/namespaces/agg/tasks/via-aggregator"
	const full = `{"data":{"extract_count":{"total":9,"current":3,"identifier":""},"extract_size":{"total":4194304,"current":1048576,"identifier":""}},"code":0,"msg":""}`

	waitFor(t, func() bool { return raw(t, admin, byID) == full }) // the group binding reaching the authorizer
	cases := map[string]struct {
		u          *envtest.AuthenticatedUser
		path, want string
	}{
		"owner by id":      {owner, byID, full},
		"owner by name":    {owner, byName, full},
		"stranger by id":   {stranger, byID, empty},
		"stranger by name": {stranger, byName, empty},
		"admin by id":      {admin, byID, full},
		"admin by name":    {admin, byName, full},
		"unknown id":       {owner, "/apis/progress.taskops.dev/v1alpha1/progress/AAAAAAAAAA", empty},
		"unknown name":     {owner, "/apis/progress.taskops.dev/v1alpha1/namespaces/agg/tasks/nope", empty},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, raw(t, tc.u, tc.path)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}

	// The same through kubectl, as users run it.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	kc, err := owner.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(env.ControlPlane.KubectlPath, "--kubeconfig", kubeconfig, "get", "--raw", byName).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != full {
		t.Errorf("kubectl get --raw: %v %s", err, out)
	}
	t.Logf("$ kubectl get --raw %s\n%s", byName, out)
}
