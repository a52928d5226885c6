package config_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// helmChart writes the chart as make helm does (hack/helmchart) into a directory of the test's
// and returns it with the helm binary (built from hack/tools/helm by make test).
func helmChart(t *testing.T) (helm, chart string) {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	helm = filepath.Join(abs, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("%v: make test builds helm from hack/tools/helm (make helm)", err)
	}
	chart = filepath.Join(t.TempDir(), "workflowtask-operator")
	gen := exec.Command("go", "run", "./hack/helmchart", "-out", chart)
	gen.Dir = abs
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("hack/helmchart: %v\n%s", err, out)
	}
	return helm, chart
}

func helmTemplate(t *testing.T, helm, chart string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := exec.Command(helm, append([]string{"template", "wft", chart}, args...)...).Output()
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	objs, err := testenv.DecodeObjects(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func byKey(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		out[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = o
	}
	return out
}

// The chart is made from config/default and renders it: helm lint passes, and helm template
// with the defaults gives exactly config/default's objects (but the Namespace, which Helm
// creates); the namespace, the image and the replicas are values that reach every place
// config/default names them — the admission policies' operator identity included.
func TestHelmChart(t *testing.T) {
	helm, chart := helmChart(t)
	if out, err := exec.Command(helm, "lint", chart, "--strict").CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	want := map[string]*unstructured.Unstructured{}
	for k, o := range byKey(kustomize("default")(t)) {
		if o.GetKind() != "Namespace" {
			want[k] = o
		}
	}
	got := byKey(helmTemplate(t, helm, chart, "--namespace", "workflowtask-system"))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("helm template (defaults) differs from config/default (-kustomize +helm):\n%s", diff)
	}

	objs := helmTemplate(t, helm, chart, "--namespace", "files", "--set", "image.repository=registry.example/wft", "--set", "image.tag=v1.2.3", "--set", "replicas=2")
	deployments := typedAll[appsv1.Deployment](t, objs, "Deployment")
	if len(deployments) != 1 {
		t.Fatalf("%d Deployments", len(deployments))
	}
	d := deployments[0]
	ctr := d.Spec.Template.Spec.Containers[0]
	if ctr.Image != "registry.example/wft:v1.2.3" || d.Namespace != "files" || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s/%s: image %s, replicas %v", d.Namespace, d.Name, ctr.Image, d.Spec.Replicas)
	}
	if v, _ := lastFlag(ctr.Args, "progress-image", false); v != "registry.example/wft:v1.2.3" {
		t.Errorf("--progress-image=%s, want the chart's image", v)
	}
	all, _ := exec.Command(helm, "template", "wft", chart, "--namespace", "files").Output()
	if strings.Contains(string(all), "workflowtask-system") {
		t.Errorf("rendered into namespace files, the chart still names workflowtask-system")
	}
	if !strings.Contains(string(all), "system:serviceaccount:files:workflowtask-controller-manager") {
		t.Errorf("the admission policies do not recognise the operator's identity in namespace files")
	}
}
