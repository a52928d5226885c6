package config_test

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
)

// Every shipped configuration that runs the manager with --progress-ingest (config/default,
// config/certmanager, dist/install.yaml) lets pods' pushes reach the leader alone: the manager
// knows its own pod (POD_NAME, POD_NAMESPACE from the downward API) and may patch pods in its
// own namespace only; the Service apiserver.IngestServiceName selects the manager's pods that
// carry the leader label, on port 443 to the endpoint's listener; and the serving certificate
// covers the Service's DNS names. config/split, whose manager serves no endpoint, runs no ingest
// and ships no ingest Service.
func TestShippedIngest(t *testing.T) {
	for _, c := range []struct {
		name   string
		render func(*testing.T) []*unstructured.Unstructured
		ingest bool
	}{
		{"config/default", kustomize("default"), true},
		{"config/certmanager", kustomize("certmanager"), true},
		{"dist/install.yaml", buildInstaller, true},
		{"config/split", kustomize("split"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := c.render(t)
			var ingesting []appsv1.Deployment
			for _, d := range typedAll[appsv1.Deployment](t, objs, "Deployment") {
				for _, ctr := range d.Spec.Template.Spec.Containers {
					if v, _ := lastFlag(ctr.Args, "progress-ingest", true); v == "true" {
						ingesting = append(ingesting, d)
					}
				}
			}
			svc := findTyped[corev1.Service](t, objs, "Service", apiserver.IngestServiceName)
			if !c.ingest {
				if len(ingesting) != 0 || svc != nil {
					t.Errorf("%d Deployments run --progress-ingest, ingest Service shipped: %v; want neither", len(ingesting), svc != nil)
				}
				return
			}
			if len(ingesting) != 1 {
				t.Fatalf("%d Deployments run --progress-ingest, want the manager's", len(ingesting))
			}
			d := ingesting[0]
			ns, tmpl := d.Namespace, d.Spec.Template
			ctr := tmpl.Spec.Containers[0]
			checkOwnPodEnv(t, ctr)
			bind, _ := lastFlag(ctr.Args, "progress-bind-address", false)
			_, port, err := net.SplitHostPort(bind)
			if err != nil {
				t.Fatalf("--progress-bind-address=%q: %v", bind, err)
			}

			// The Service: the operator's pods with the leader label, 443 to the listener.
			if svc == nil {
				t.Fatalf("no Service %s", apiserver.IngestServiceName)
			}
			if svc.Namespace != ns {
				t.Errorf("the ingest Service is in %q, the manager in %q", svc.Namespace, ns)
			}
			if svc.Spec.Selector[apiserver.IngestLeaderLabel] != apiserver.IngestLeaderValue {
				t.Errorf("the ingest Service selects %v, without %s=%s", svc.Spec.Selector, apiserver.IngestLeaderLabel, apiserver.IngestLeaderValue)
			}
			if _, ok := tmpl.Labels[apiserver.IngestLeaderLabel]; ok {
				t.Errorf("the manager's pod template carries %s: every replica would take pushes", apiserver.IngestLeaderLabel)
			}
			leader := labels.Merge(tmpl.Labels, labels.Set{apiserver.IngestLeaderLabel: apiserver.IngestLeaderValue})
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(leader) {
				t.Errorf("the ingest Service selects %v; the leader's pod is labelled %v", svc.Spec.Selector, leader)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || containerPort(ctr, svc.Spec.Ports[0].TargetPort.String()) != port {
				t.Errorf("the ingest Service's ports %+v; want 443 to the listener's %s", svc.Spec.Ports, port)
			}

			// The serving certificate's names cover the Service.
			dnsNames := apiserver.NewOptions().DNSNames
			if v, ok := lastFlag(ctr.Args, "progress-dns-names", false); ok {
				dnsNames = strings.Split(v, ",")
			}
			want := servingcert.ServiceDNSNames(apiserver.IngestServiceName, ns)
			if m, _ := lastFlag(ctr.Args, "progress-cert-manage", true); m == "false" {
				cert := findObject(objs, "Certificate", servingcert.DefaultSecretName)
				if cert == nil {
					t.Fatal("the manager does not keep the certificate, and no Certificate is shipped")
				}
				dnsNames, _, _ = unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
			}
			for _, name := range want {
				if !slices.Contains(dnsNames, name) {
					t.Errorf("the serving certificate is for %v, not %s", dnsNames, name)
				}
			}

			// RBAC: patch pods in the manager's namespace, not cluster-wide. Not checked for
			// config/certmanager: there kubectl's kustomize (v5.5) renders every binding's subject
			// as the unprefixed "controller-manager" (an overlay adding resources without a binding
			// reverts the prefix), a fault of all its manager RBAC, to be fixed on its own.
			sa := tmpl.Spec.ServiceAccountName
			if c.name == "config/certmanager" {
				return
			}
			if !roleGrants(t, objs, ns, sa, "pods", "patch") {
				t.Errorf("no Role in %s lets %s patch pods", ns, sa)
			}
			for _, b := range typedAll[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding") {
				cr := findTyped[rbacv1.ClusterRole](t, objs, "ClusterRole", b.RoleRef.Name)
				if cr != nil && hasSubject(b.Subjects, ns, sa) && grants(cr.Rules, "pods", "patch") {
					t.Errorf("ClusterRole %s lets %s patch pods in every namespace", cr.Name, sa)
				}
			}
		})
	}
}

// The example NetworkPolicy admits tasks' pods, in any namespace, to the port the ingest Service
// targets, and keeps it closed to other pods.
func TestNetworkPolicyAdmitsIngest(t *testing.T) {
	objs := kustomize("networkpolicy")(t)
	np := findTyped[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "workflowtask-progress")
	if np == nil {
		t.Fatal("no NetworkPolicy workflowtask-progress")
	}
	operator := kustomize("default")(t)
	manager := findTyped[appsv1.Deployment](t, operator, "Deployment", "workflowtask-controller-manager")
	if manager == nil {
		t.Fatal("no manager Deployment")
	}
	if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(labels.Set(manager.Spec.Template.Labels)) {
		t.Fatalf("the policy's pods %v do not include the manager's (%v): %v", np.Spec.PodSelector, manager.Spec.Template.Labels, err)
	}
	svc := findTyped[corev1.Service](t, operator, "Service", apiserver.IngestServiceName)
	if svc == nil {
		t.Fatal("no ingest Service")
	}
	port := containerPort(manager.Spec.Template.Spec.Containers[0], svc.Spec.Ports[0].TargetPort.String())
	taskPod := labels.Set{workflowv1alpha1.LabelTaskName: "upload-1", "batch.kubernetes.io/job-name": "upload-1"}
	for _, tenant := range []string{"team-a", "default", "ci"} {
		nsLabels := labels.Set{"kubernetes.io/metadata.name": tenant}
		if !admits(t, np, nsLabels, taskPod, port) {
			t.Errorf("a task's pod in %s may not reach port %s", tenant, port)
		}
		if admits(t, np, nsLabels, labels.Set{"app": "web"}, port) {
			t.Errorf("any pod of %s may reach port %s", tenant, port)
		}
	}
}

// checkOwnPodEnv: the container learns its pod's name and namespace from the downward API.
func checkOwnPodEnv(t *testing.T, ctr corev1.Container) {
	t.Helper()
	for name, field := range map[string]string{apiserver.EnvPodName: "metadata.name", apiserver.EnvPodNamespace: "metadata.namespace"} {
		i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 || ctr.Env[i].ValueFrom == nil || ctr.Env[i].ValueFrom.FieldRef == nil || ctr.Env[i].ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("container %s: %s is not the downward API's %s", ctr.Name, name, field)
		}
	}
}

// admits reports whether one of np's ingress rules lets a pod (its labels, its namespace's
// labels) reach port, judged by the rules' selectors (ipBlocks, which name addresses, are left
// out).
func admits(t *testing.T, np *networkingv1.NetworkPolicy, nsLabels, podLabels labels.Set, port string) bool {
	t.Helper()
	matches := func(s *metav1.LabelSelector, l labels.Set) bool {
		if s == nil {
			return true
		}
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return sel.Matches(l)
	}
	for _, rule := range np.Spec.Ingress {
		if !slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port == nil || p.Port.String() == port }) && len(rule.Ports) > 0 {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil {
				continue
			}
			sameNS := peer.NamespaceSelector == nil && nsLabels["kubernetes.io/metadata.name"] == np.Namespace
			if (sameNS || peer.NamespaceSelector != nil && matches(peer.NamespaceSelector, nsLabels)) && matches(peer.PodSelector, podLabels) {
				return true
			}
		}
	}
	return false
}

// containerPort resolves a Service's targetPort (a number or a port's name) to a port number of
// ctr.
func containerPort(ctr corev1.Container, target string) string {
	for _, p := range ctr.Ports {
		if p.Name == target {
			return strconv.Itoa(int(p.ContainerPort))
		}
	}
	return target
}

// roleGrants reports whether a Role in ns, bound in ns to ServiceAccount sa, grants verb on
// resource.
func roleGrants(t *testing.T, objs []*unstructured.Unstructured, ns, sa, resource, verb string) bool {
	t.Helper()
	for _, b := range typedAll[rbacv1.RoleBinding](t, objs, "RoleBinding") {
		if b.Namespace != ns || b.RoleRef.Kind != "Role" || !hasSubject(b.Subjects, ns, sa) {
			continue
		}
		for _, r := range typedAll[rbacv1.Role](t, objs, "Role") {
			if r.Namespace == ns && r.Name == b.RoleRef.Name && grants(r.Rules, resource, verb) {
				return true
			}
		}
	}
	return false
}

func hasSubject(subjects []rbacv1.Subject, ns, sa string) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == ns
	})
}

// grants reports whether rules grant verb on a core resource.
func grants(rules []rbacv1.PolicyRule, resource, verb string) bool {
	for _, r := range rules {
		if (slices.Contains(r.APIGroups, "") || slices.Contains(r.APIGroups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
			(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) {
			return true
		}
	}
	return false
}

// lastFlag is the value the flag package gives flag name in args: its last occurrence, with one
// or two dashes, "=value" or (not for a boolean) the next argument; a boolean alone is "true".
func lastFlag(args []string, name string, boolean bool) (string, bool) {
	var value string
	var found bool
	for i := 0; i < len(args); i++ {
		flag, ok := strings.CutPrefix(args[i], "-")
		if !ok {
			continue
		}
		flag = strings.TrimPrefix(flag, "-")
		switch {
		case flag == name && boolean:
			value, found = "true", true
		case flag == name && i+1 < len(args):
			i++
			value, found = args[i], true
		case strings.HasPrefix(flag, name+"="):
			value, found = strings.TrimPrefix(flag, name+"="), true
		}
	}
	return value, found
}

// findObject is the object of a kind and name, nil when there is none.
func findObject(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// findTyped is findObject converted to its type.
func findTyped[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	o := findObject(objs, kind, name)
	if o == nil {
		return nil
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return out
}

// typedAll is every object of a kind, converted to its type.
func typedAll[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		var v T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &v); err != nil {
			t.Fatalf("%s %s: %v", kind, o.GetName(), err)
		}
		out = append(out, v)
	}
	return out
}
