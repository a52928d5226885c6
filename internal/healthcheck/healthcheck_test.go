package healthcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

const argoDir = "../../config/argocd/workflow.taskops.dev/WorkflowTask"

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readObject reads a Kubernetes object as the API machinery decodes one (integers as int64).
func readObject(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, j)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj.(*unstructured.Unstructured).Object
}

func script(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(argoDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every case of health_test.yaml, as Argo CD's own test of a health check runs it: the script on
// the testdata object, status and message compared exactly. (The testdata are objects the real
// controller produced: TestStatusContract keeps them so.)
func TestArgoCDHealthTests(t *testing.T) {
	var suite struct {
		Tests []struct {
			HealthStatus struct{ Status, Message string } `json:"healthStatus"`
			InputPath    string                           `json:"inputPath"`
		} `json:"tests"`
	}
	readYAML(t, filepath.Join(argoDir, "health_test.yaml"), &suite)
	if len(suite.Tests) < 10 {
		t.Fatalf("health_test.yaml holds %d cases", len(suite.Tests))
	}
	for _, tc := range suite.Tests {
		t.Run(tc.InputPath, func(t *testing.T) {
			obj := readObject(t, filepath.Join(argoDir, tc.InputPath))
			status, message, err := ArgoHealth(script(t), obj)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.HealthStatus.Status || message != tc.HealthStatus.Message {
				t.Errorf("got %s %q, want %s %q", status, message, tc.HealthStatus.Status, tc.HealthStatus.Message)
			}
		})
	}
}

// The Flux healthCheckExprs of config/flux give kstatus' verdict on every testdata object.
func TestFluxExprsAgreeWithKStatus(t *testing.T) {
	var k struct {
		Spec struct {
			HealthCheckExprs []FluxExprs `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	readYAML(t, "../../config/flux/workflowtasks-kustomization.yaml", &k)
	if len(k.Spec.HealthCheckExprs) != 1 {
		t.Fatalf("%d healthCheckExprs", len(k.Spec.HealthCheckExprs))
	}
	files, err := filepath.Glob(filepath.Join(argoDir, "testdata", "*.yaml"))
	if err != nil || len(files) < 10 {
		t.Fatalf("testdata: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj := readObject(t, f)
			want, _, err := KStatus(obj)
			if err != nil {
				t.Fatal(err)
			}
			got, err := FluxStatus(k.Spec.HealthCheckExprs[0], obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("Flux says %s, kstatus %s", got, want)
			}
		})
	}
}

// The sandbox is Argo CD's, no more: package, base, table and the safe os (time, date); no
// string, math, io or debug library, no os.execute; a script that runs on is stopped.
func TestArgoSandbox(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x"}}
	for name, s := range map[string]string{
		"os.execute":    `os.execute("true") return {status="Healthy"}`,
		"required os":   `local o = require("os") o.execute("true") return {status="Healthy"}`,
		"io":            `io.open("/etc/passwd") return {status="Healthy"}`,
		"string":        `return {status=string.upper(obj.metadata.name)}`,
		"string method": `return {status=obj.metadata.name:upper()}`,
		"math":          `return {status=tostring(math.floor(1.5))}`,
		"debug":         `debug.traceback() return {status="Healthy"}`,
		"endless":       `while true do end`,
		"no table":      `return "Healthy"`,
	} {
		t.Run(name, func(t *testing.T) {
			if status, _, err := ArgoHealth(s, obj); err == nil {
				t.Errorf("ran, status %q", status)
			}
		})
	}
	script := `local o = require("os")
return {status="Healthy", message=obj.metadata.name .. table.concat({"a","b"}) .. tostring(os.time() > 0 and o.date ~= nil)}`
	if status, msg, err := ArgoHealth(script, obj); err != nil || status != "Healthy" || msg != "xabtrue" {
		t.Errorf("package, base, table and the safe os: %s %q %v", status, msg, err)
	}
}

// config/argocd/argocd-cm-patch.yaml carries health.lua unchanged.
func TestArgoCMPatchCarriesTheScript(t *testing.T) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	readYAML(t, "../../config/argocd/argocd-cm-patch.yaml", &cm)
	got := cm.Data["resource.customizations.health.workflow.taskops.dev_WorkflowTask"]
	if got != script(t) {
		t.Errorf("the patch's script differs from health.lua (make manifests regenerates it):\n%s", firstDiff(got, script(t)))
	}
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return "line " + la[i] + " ≠ " + lb[i]
		}
	}
	return "lengths differ"
}

// docs/deployment.md shows the same expressions as config/flux.
func TestDocsShowTheFluxExprs(t *testing.T) {
	var k struct {
		Spec struct {
			HealthCheckExprs []FluxExprs `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	readYAML(t, "../../config/flux/workflowtasks-kustomization.yaml", &k)
	readme, err := os.ReadFile("../../docs/deployment.md")
	if err != nil {
		t.Fatal(err)
	}
	e := k.Spec.HealthCheckExprs[0]
	for _, expr := range []string{e.InProgress, e.Failed, e.Current} {
		if !strings.Contains(string(readme), `"`+expr+`"`) {
			t.Errorf("docs/deployment.md lacks %s", expr)
		}
	}
}
