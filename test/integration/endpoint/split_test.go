package endpoint_test

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// config/split's endpoint runs under a ServiceAccount of its own that holds exactly: read
// WorkflowTasks, create TokenReviews and SubjectAccessReviews, read the API server's
// authentication ConfigMap — read back as the cluster sees it (SelfSubjectRulesReview, and
// SubjectAccessReviews for what it must not do) — and that is enough to serve: an endpoint run
// with that identity alone (no controller) answers an owner.
func TestSplitEndpointIdentity(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns, sa = "workflowtask-system", "workflowtask-progress-endpoint"
	installSplitEndpointRBAC(t)
	token, err := testenv.Token(ctx, adminCfg, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.BearerConfig(adminCfg, token)
	cs := kubernetes.NewForConfigOrDie(cfg)

	// Its rules in kube-system, less what any ServiceAccount has (a fresh one's rules).
	rulesOf := func(g gomega.Gomega, cs kubernetes.Interface) []string {
		review, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
			&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: "kube-system"}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		var rules []string
		for _, r := range review.Status.ResourceRules {
			for _, group := range r.APIGroups {
				for _, res := range r.Resources {
					rules = append(rules, group+"/"+res+" "+strings.Join(r.Verbs, ",")+" "+strings.Join(r.ResourceNames, ","))
				}
			}
		}
		slices.Sort(rules)
		return rules
	}
	anyCfg, _, err := testenv.ServiceAccountConfig(ctx, adminCfg, ns, "any-service-account")
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		baseline := rulesOf(g, kubernetes.NewForConfigOrDie(anyCfg))
		rules = slices.DeleteFunc(rulesOf(g, cs), func(r string) bool { return slices.Contains(baseline, r) })
		g.Expect(rules).To(gomega.Equal([]string{
			// extension-apiserver-authentication-reader, in kube-system.
			"/configmaps get,list,watch extension-apiserver-authentication",
			// system:auth-delegator.
			"authentication.k8s.io/tokenreviews create ",
			"authorization.k8s.io/subjectaccessreviews create ",
			// progress-endpoint-role.
			"workflow.taskops.dev/workflowtasks get,list,watch ",
		}))
	}).Should(gomega.Succeed())
	t.Logf("effective rules in kube-system beyond any ServiceAccount's:\n%s", strings.Join(rules, "\n"))

	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Group: "batch", Resource: "jobs", Verb: "create", Namespace: "team-a"},
		{Group: "workflow.taskops.dev", Resource: "workflowtasks", Subresource: "status", Verb: "patch", Namespace: "team-a"},
		{Group: "workflow.taskops.dev", Resource: "workflowtasks", Verb: "delete", Namespace: "team-a"},
		{Resource: "serviceaccounts", Verb: "create", Namespace: "team-a"},
		{Group: "rbac.authorization.k8s.io", Resource: "rolebindings", Verb: "create", Namespace: "team-a"},
		{Resource: "secrets", Verb: "get", Namespace: "workflowtask-system"},
		{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: "workflowtask-system"},
	} {
		review, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed {
			t.Errorf("the endpoint's identity may %s %s/%s", attrs.Verb, attrs.Resource, attrs.Subresource)
		}
	}

	// Enough to serve: an endpoint alone, as that identity.
	m, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: testenv.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := apiserver.NewOptions()
	opts.BindAddress = ln.Addr().String()
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	if _, err := apiserver.SetupWithManager(ctx, m, opts, func(c *apiserver.Config) { c.Listener = ln }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	owner := newSAUser(t, "users", "split")
	task := createTaskWithProgress(t, testutil.MakeTask("split", "team-d").Owner(owner.name), entry("upload", 3, 9, ""))
	url := "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	gomega.NewWithT(t).Eventually(func() int { return callRequest(t, clientFor(t), bearerRequest(url, owner.token)) }).
		Should(gomega.Equal(apiserver.CodeSuccess), "the split endpoint serves the owner")
}

// installSplitEndpointRBAC creates the endpoint's ServiceAccount and RBAC as `kubectl kustomize
// config/split` renders them.
func installSplitEndpointRBAC(t *testing.T) {
	t.Helper()
	objs, err := testenv.Kustomize(env.ControlPlane.KubectlPath, "split")
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, u := range objs {
		if !strings.HasPrefix(u.GetName(), "workflowtask-progress-endpoint") || u.GetKind() == "Deployment" {
			continue
		}
		if err := k8sClient.Create(context.Background(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		created++
	}
	if created != 5 { // ServiceAccount, ClusterRole, two ClusterRoleBindings, a RoleBinding
		t.Fatalf("config/split holds %d objects of the endpoint's identity, want 5", created)
	}
}

// The NetworkPolicy example of config/networkpolicy is a valid object for the API server.
func TestNetworkPolicyExample(t *testing.T) {
	objs, err := testenv.Kustomize(env.ControlPlane.KubectlPath, "networkpolicy")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "NetworkPolicy" || objs[0].GetNamespace() != "workflowtask-system" {
		t.Fatalf("rendered %d objects: %v", len(objs), objs)
	}
	if err := k8sClient.Create(context.Background(), objs[0], client.DryRunAll); err != nil {
		t.Errorf("the API server refuses the example: %v", err)
	}
}
