package config_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// controllerRuntimeMetrics are controller-runtime's series the dashboard reads.
var controllerRuntimeMetrics = []string{"controller_runtime_reconcile_total", "workqueue_depth"}

// definedMetrics are the workflowtask_* names the operator's shipped code defines (string
// literals of apiserver/, controllers/ and pkg/, tests aside), with the series a histogram adds.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	metricName := regexp.MustCompile(`^workflowtask_[a-z_]+$`)
	for _, dir := range []string{"apiserver", "controllers", "pkg"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && metricName.MatchString(s) {
						names[s] = true
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// The Grafana dashboard is valid JSON of Grafana's shape, every panel queries Prometheus through
// the dashboard's datasource variable, and every metric a query names is one the operator
// defines, kube-state-metrics exports with config/kube-state-metrics, or controller-runtime has.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "config/grafana/workflowtask-operator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Datasource struct{ Type, UID string }
			Targets    []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatal(err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Templating.List) != 1 || dash.Templating.List[0].Type != "datasource" {
		t.Errorf("title %q, uid %q, templating %+v", dash.Title, dash.UID, dash.Templating.List)
	}
	known := definedMetrics(t)
	var ksm struct {
		Spec struct {
			Resources []struct {
				MetricNamePrefix string `json:"metricNamePrefix"`
				Metrics          []struct {
					Name string `json:"name"`
				} `json:"metrics"`
			} `json:"resources"`
		} `json:"spec"`
	}
	rawKSM, err := os.ReadFile(filepath.Join(root, "config/kube-state-metrics/workflowtask-metrics.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(rawKSM, &ksm); err != nil {
		t.Fatal(err)
	}
	for _, r := range ksm.Spec.Resources {
		for _, m := range r.Metrics {
			known[r.MetricNamePrefix+"_"+m.Name] = true
		}
	}
	for _, m := range controllerRuntimeMetrics {
		known[m] = true
	}
	series := regexp.MustCompile(`\b(?:workflowtask|controller_runtime|workqueue)_[a-z_]+\b`)
	for _, p := range dash.Panels {
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d queries", p.Title, p.Datasource, len(p.Targets))
		}
		for _, q := range p.Targets {
			used := series.FindAllString(q.Expr, -1)
			if len(used) == 0 || strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") {
				t.Errorf("panel %q query %s: names no metric, or unbalanced: %s", p.Title, q.RefID, q.Expr)
			}
			for _, name := range used {
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
						base = b
					}
				}
				if !known[base] {
					t.Errorf("panel %q queries %s, which neither the operator, kube-state-metrics' config nor controller-runtime exports", p.Title, name)
				}
			}
		}
	}
}
