package endpoint_test

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// rendered is an overlay of config/ as kubectl kustomize renders it.
type rendered []*unstructured.Unstructured

func render(t *testing.T, dir string) rendered {
	t.Helper()
	objs, err := testenv.Kustomize(env.ControlPlane.KubectlPath, dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func (r rendered) find(kind, name string) *unstructured.Unstructured {
	for _, u := range r {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

// args are the first container's arguments of a Deployment.
func (r rendered) args(t *testing.T, deployment string) []string {
	t.Helper()
	d := r.find("Deployment", deployment)
	if d == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	return args
}

// flagValue is the last value given to --name (the one that counts), and whether it was given.
func flagValue(args []string, name string) (string, bool) {
	value, found := "", false
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			value, found = v, true
		}
	}
	return value, found
}

// resourceNames are the resourceNames of a role's rules for a resource.
func resourceNames(role *unstructured.Unstructured, resource string) []string {
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	var names []string
	for _, r := range rules {
		res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
		if slices.Contains(res, resource) {
			n, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resourceNames")
			names = append(names, n...)
		}
	}
	return names
}

const manager = "workflowtask-controller-manager"

// No overlay of config/ skips TLS verification, and each one's pieces fit: the Secrets the
// manager is told to keep exist (or cert-manager makes the serving one), its RBAC names those
// Secrets, the bundle ConfigMap and the APIService, no other role reaches the CA Secret, the
// split endpoint mounts the serving certificate and key only, and the certificate is for the
// metrics Service's names too.
func TestConfigVerifiesTLS(t *testing.T) {
	for _, dir := range []string{"default", "local", "split", "certmanager"} {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			svc := objs.find("APIService", servingcert.DefaultAPIService)
			if svc == nil {
				t.Fatal("no APIService")
			}
			if _, found, _ := unstructured.NestedFieldNoCopy(svc.Object, "spec", "insecureSkipTLSVerify"); found {
				t.Error("the APIService sets insecureSkipTLSVerify")
			}
			if ca, _, _ := unstructured.NestedString(svc.Object, "spec", "caBundle"); ca != "" {
				t.Error("the APIService ships a fixed caBundle")
			}
			role := objs.find("Role", "workflowtask-progress-cert-role")
			if role == nil || !slices.Equal(resourceNames(role, "secrets"), []string{servingcert.DefaultSecretName}) ||
				!slices.Equal(resourceNames(role, "configmaps"), []string{servingcert.DefaultBundleConfigMap}) {
				t.Errorf("the manager's Role for the serving Secret and the bundle ConfigMap: %v", role)
			}
			if objs.find("ConfigMap", servingcert.DefaultBundleConfigMap) == nil {
				t.Error("no CA bundle ConfigMap shipped")
			}
			if role := objs.find("ClusterRole", "workflowtask-progress-cabundle-role"); role == nil || !slices.Equal(resourceNames(role, "apiservices"), []string{servingcert.DefaultAPIService}) {
				t.Errorf("the manager's ClusterRole for the APIService: %v", role)
			}
			// Only the manager's CA Role may reach the CA Secret (by name or by granting every Secret).
			for _, r := range objs {
				if (r.GetKind() == "Role" || r.GetKind() == "ClusterRole") && r.GetName() != "workflowtask-progress-ca-role" && reachesSecret(r, servingcert.DefaultCASecretName) {
					t.Errorf("%s %s may read the CA Secret", r.GetKind(), r.GetName())
				}
			}
			caRole := objs.find("Role", "workflowtask-progress-ca-role")
			caShipped := objs.find("Secret", servingcert.DefaultCASecretName) != nil
			if dir == "certmanager" {
				if caRole != nil || caShipped {
					t.Errorf("with cert-manager the operator keeps no CA: its Role %v, its Secret shipped %v", caRole != nil, caShipped)
				}
			} else if caRole == nil || !slices.Equal(resourceNames(caRole, "secrets"), []string{servingcert.DefaultCASecretName}) || !caShipped {
				t.Errorf("the manager's Role for the CA Secret: %v; the CA Secret shipped: %v", caRole, caShipped)
			}
			metricsSvc := objs.find("Service", servingcert.DefaultMetricsService)
			if metricsSvc == nil {
				t.Fatalf("no metrics Service %s", servingcert.DefaultMetricsService)
			}
			metricsNames := servingcert.ServiceDNSNames(metricsSvc.GetName(), metricsSvc.GetNamespace())
			if !slices.Equal(servingcert.NewOptions().MetricsDNSNames, metricsNames) {
				t.Errorf("the serving certificate is for %v, the metrics Service's names are %v", servingcert.NewOptions().MetricsDNSNames, metricsNames)
			}
			if dir == "local" { // no Deployment: make run's manager uses the defaults
				return
			}
			args := objs.args(t, manager)
			if secret, _ := flagValue(args, "progress-cert-secret"); secret != servingcert.DefaultSecretName {
				t.Errorf("the manager keeps the Secret %q", secret)
			}
			manage, _ := flagValue(args, "progress-cert-manage")
			secretShipped := objs.find("Secret", servingcert.DefaultSecretName) != nil
			if dir == "certmanager" {
				if manage != "false" || secretShipped {
					t.Errorf("with cert-manager the manager must only serve (--progress-cert-manage=%q) and cert-manager makes the Secret (shipped: %v)", manage, secretShipped)
				}
				if got := svc.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != "workflowtask-system/"+servingcert.DefaultSecretName {
					t.Errorf("cainjector annotation %q", got)
				}
				cert := objs.find("Certificate", servingcert.DefaultSecretName)
				if cert == nil {
					t.Fatal("no Certificate")
				}
				secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
				dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
				if secretName != servingcert.DefaultSecretName || !slices.Contains(dnsNames, serviceName) {
					t.Errorf("the Certificate writes %q for %v", secretName, dnsNames)
				}
				for _, n := range metricsNames {
					if !slices.Contains(dnsNames, n) {
						t.Errorf("the Certificate is not for the metrics Service's %s", n)
					}
				}
				return
			}
			if manage == "false" || !secretShipped {
				t.Errorf("the operator must keep the certificate (--progress-cert-manage=%q) in the shipped Secret (shipped: %v)", manage, secretShipped)
			}
			if dir == "split" {
				endpoint := objs.args(t, "workflowtask-progress-endpoint")
				if secret, found := flagValue(endpoint, "progress-cert-secret"); !found || secret != "" {
					t.Errorf("the split endpoint may not read Secrets: --progress-cert-secret=%q", secret)
				}
				if f, _ := flagValue(endpoint, "progress-tls-cert-file"); f != "/etc/progress-cert/tls.crt" {
					t.Errorf("the split endpoint serves %q", f)
				}
				d := objs.find("Deployment", "workflowtask-progress-endpoint")
				volumes, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
				if len(volumes) != 1 {
					t.Fatalf("volumes: %v", volumes)
				}
				if name, _, _ := unstructured.NestedString(volumes[0].(map[string]any), "secret", "secretName"); name != servingcert.DefaultSecretName {
					t.Errorf("the split endpoint mounts the Secret %q", name)
				}
				items, _, _ := unstructured.NestedSlice(volumes[0].(map[string]any), "secret", "items")
				var keys []string
				for _, it := range items {
					k, _, _ := unstructured.NestedString(it.(map[string]any), "key")
					keys = append(keys, k)
				}
				if !slices.Equal(keys, []string{servingcert.CertKey, servingcert.KeyKey}) {
					t.Errorf("the split endpoint mounts the keys %v of the Secret, want tls.crt and tls.key only", keys)
				}
			}
		})
	}
}

// reachesSecret reports whether a role lets its holders read the Secret name: a rule on
// secrets (or every resource) of the core group with a reading verb, for that name or for all.
func reachesSecret(role *unstructured.Unstructured, name string) bool {
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	for _, r := range rules {
		m := r.(map[string]any)
		groups, _, _ := unstructured.NestedStringSlice(m, "apiGroups")
		resources, _, _ := unstructured.NestedStringSlice(m, "resources")
		verbs, _, _ := unstructured.NestedStringSlice(m, "verbs")
		names, _, _ := unstructured.NestedStringSlice(m, "resourceNames")
		if !slices.ContainsFunc(groups, func(g string) bool { return g == "" || g == "*" }) ||
			!slices.ContainsFunc(resources, func(r string) bool { return r == "secrets" || r == "*" }) ||
			!slices.ContainsFunc(verbs, func(v string) bool { return v == "get" || v == "list" || v == "watch" || v == "*" }) {
			continue
		}
		if len(names) == 0 || slices.Contains(names, name) {
			return true
		}
	}
	return false
}
