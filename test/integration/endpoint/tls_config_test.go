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

// No overlay of config/ skips TLS verification, and each one's pieces fit: the Secret the
// manager is told to keep exists (or cert-manager makes it), its RBAC names that Secret and the
// APIService, the split endpoint mounts it.
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
			if role := objs.find("Role", "workflowtask-progress-cert-role"); role == nil || !slices.Equal(resourceNames(role, "secrets"), []string{servingcert.DefaultSecretName}) {
				t.Errorf("the manager's Role for the certificate's Secret: %v", role)
			}
			if role := objs.find("ClusterRole", "workflowtask-progress-cabundle-role"); role == nil || !slices.Equal(resourceNames(role, "apiservices"), []string{servingcert.DefaultAPIService}) {
				t.Errorf("the manager's ClusterRole for the APIService: %v", role)
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
			}
		})
	}
}
