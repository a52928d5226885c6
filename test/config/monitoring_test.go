// Package config_test checks the monitoring objects config/ ships for other tools — the
// Prometheus Operator's ServiceMonitor and PrometheusRule, kube-state-metrics' custom resource
// state config — against those tools' own types and against the operator: the metrics they
// name exist, the paths they read exist in the CRD's schema.
package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
)

const root = "../.."

// readStrict decodes a YAML file into v, refusing fields v does not have.
func readStrict(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// operatorMetrics are the names of the series the manager exposes, read from its collectors.
func operatorMetrics(t *testing.T) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc, 16)
	for _, c := range []prometheus.Collector{controllers.NewPhaseCollector(nil), controllers.TaskDuration, controllers.ReconcileErrors} {
		c.Describe(ch)
	}
	close(ch)
	names := map[string]bool{apiserver.RejectedTokenCacheBytesMetric: true}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names[m[1]] = true
	}
	for _, h := range []string{"workflowtask_task_duration_seconds"} {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[h+s] = true
		}
	}
	return names
}

// The example alerts are PrometheusRule objects as the Prometheus Operator reads them, each
// alert complete, and every metric they use one the manager exposes.
func TestPrometheusRule(t *testing.T) {
	var rule monitoringv1.PrometheusRule
	readStrict(t, "config/prometheus/alerts.yaml", &rule)
	known := operatorMetrics(t)
	metric := regexp.MustCompile(`\bworkflowtask_[a-z_]+\b`)
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			expr := r.Expr.String()
			if r.Alert == "" || expr == "" || r.For == nil || r.Annotations["summary"] == "" {
				t.Errorf("incomplete rule %+v", r)
			}
			used := metric.FindAllString(expr, -1)
			if len(used) == 0 {
				t.Errorf("%s uses none of the operator's metrics: %s", r.Alert, expr)
			}
			for _, m := range used {
				if !known[m] {
					t.Errorf("%s uses %s, which the manager does not expose", r.Alert, m)
				}
			}
			if strings.Count(expr, "(") != strings.Count(expr, ")") {
				t.Errorf("%s: unbalanced parentheses: %s", r.Alert, expr)
			}
			alerts = append(alerts, r.Alert)
		}
	}
	slices.Sort(alerts)
	if !slices.Equal(alerts, []string{"WorkflowTaskErrorRate", "WorkflowTaskReconcileErrors", "WorkflowTasksStalled"}) {
		t.Errorf("alerts: %v", alerts)
	}
}

// The ServiceMonitor selects the manager's metrics Service by its labels and port, and verifies
// its certificate — Prometheus sends its token — with the operator's CA bundle ConfigMap for
// the Service's DNS name, which the serving certificate covers: no insecureSkipVerify.
func TestServiceMonitor(t *testing.T) {
	var sm monitoringv1.ServiceMonitor
	readStrict(t, "config/prometheus/monitor.yaml", &sm)
	var svc struct {
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Ports []struct {
				Name string `json:"name"`
			} `json:"ports"`
		} `json:"spec"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "config/operator/metrics_service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &svc); err != nil {
		t.Fatal(err)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the metrics Service's labels %v", k, v, svc.Metadata.Labels)
		}
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Scheme == nil {
		t.Fatalf("endpoints %+v, Service ports %+v", sm.Spec.Endpoints, svc.Spec.Ports)
	}

	tlsConfig := sm.Spec.Endpoints[0].TLSConfig
	if tlsConfig == nil {
		t.Fatal("no tlsConfig: Prometheus would verify against its system roots")
	}
	if tlsConfig.InsecureSkipVerify != nil && *tlsConfig.InsecureSkipVerify {
		t.Error("insecureSkipVerify: Prometheus would send its token to whoever answers")
	}
	if ca := tlsConfig.CA; ca.Secret != nil || ca.ConfigMap == nil || ca.ConfigMap.Name != servingcert.DefaultBundleConfigMap || ca.ConfigMap.Key != servingcert.BundleKey {
		t.Errorf("tlsConfig.ca %s, want the ConfigMap %s, key %s", ca.String(), servingcert.DefaultBundleConfigMap, servingcert.BundleKey)
	}
	// The metrics Service as config/operator names and places it (namePrefix workflowtask-,
	// namespace workflowtask-system), and the names the serving certificate is for.
	const ns = "workflowtask-system"
	name := "workflowtask-" + svc.Metadata.Name
	if name != servingcert.DefaultMetricsService {
		t.Errorf("the metrics Service is %s, the serving certificate is for %s", name, servingcert.DefaultMetricsService)
	}
	want := name + "." + ns + ".svc"
	if tlsConfig.ServerName == nil || *tlsConfig.ServerName != want {
		t.Errorf("tlsConfig.serverName %v, want %s", tlsConfig.ServerName, want)
	}
	if !slices.Contains(servingcert.ServiceDNSNames(servingcert.DefaultMetricsService, ns), want) {
		t.Errorf("the serving certificate is not for %s", want)
	}
}

// kube-state-metrics' config reads only paths the CRD's schema has; a time is a
// _timestamp_seconds gauge; no label carries a username by default.
func TestKubeStateMetricsConfig(t *testing.T) {
	var crd apiextensionsv1.CustomResourceDefinition
	raw, err := os.ReadFile(filepath.Join(root, "config/crd/bases/workflow.taskops.dev_workflowtasks.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	type path []string
	var cfg struct {
		Kind string `json:"kind"`
		Spec struct {
			Resources []struct {
				GroupVersionKind struct{ Group, Version, Kind string } `json:"groupVersionKind"`
				MetricNamePrefix string                                `json:"metricNamePrefix"`
				LabelsFromPath   map[string]path                       `json:"labelsFromPath"`
				Metrics          []struct {
					Name string `json:"name"`
					Help string `json:"help"`
					Each struct {
						Type     string `json:"type"`
						StateSet *struct {
							LabelName string   `json:"labelName"`
							Path      path     `json:"path"`
							List      []string `json:"list"`
						} `json:"stateSet"`
						Gauge *struct {
							Path           path            `json:"path"`
							LabelsFromPath map[string]path `json:"labelsFromPath"`
							ValueFrom      path            `json:"valueFrom"`
						} `json:"gauge"`
					} `json:"each"`
				} `json:"metrics"`
			} `json:"resources"`
		} `json:"spec"`
	}
	readStrict(t, "config/kube-state-metrics/workflowtask-metrics.yaml", &cfg)
	if cfg.Kind != "CustomResourceStateMetrics" || len(cfg.Spec.Resources) != 1 {
		t.Fatalf("kind %q, %d resources", cfg.Kind, len(cfg.Spec.Resources))
	}
	res := cfg.Spec.Resources[0]
	if res.GroupVersionKind.Group != crd.Spec.Group || res.GroupVersionKind.Kind != crd.Spec.Names.Kind || res.GroupVersionKind.Version != crd.Spec.Versions[0].Name {
		t.Errorf("groupVersionKind %+v", res.GroupVersionKind)
	}
	// lookup walks the schema along p (an array's items stand for its elements).
	lookup := func(from *apiextensionsv1.JSONSchemaProps, p path) *apiextensionsv1.JSONSchemaProps {
		s := from
		for _, step := range p {
			if s.Type == "array" && s.Items != nil {
				s = s.Items.Schema
			}
			if step == "metadata" && s == schema {
				return &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptrTrue()} // ObjectMeta
			}
			next, ok := s.Properties[step]
			if !ok {
				return nil
			}
			s = &next
		}
		return s
	}
	for label, p := range res.LabelsFromPath {
		if lookup(schema, p) == nil {
			t.Errorf("label %s: no %v in the schema", label, p)
		}
		if slices.Equal(p, path{"spec", "owner"}) {
			t.Errorf("label %s is the task's owner, a username: opt-in only (documented in the file)", label)
		}
	}
	for _, m := range res.Metrics {
		if m.Help == "" {
			t.Errorf("%s has no help", m.Name)
		}
		switch {
		case m.Each.StateSet != nil:
			if lookup(schema, m.Each.StateSet.Path) == nil {
				t.Errorf("%s: no %v in the schema", m.Name, m.Each.StateSet.Path)
			}
			want := []string{string(workflowv1alpha1.TaskPhaseQueued), string(workflowv1alpha1.TaskPhaseProcessing), string(workflowv1alpha1.TaskPhaseSuspending),
				string(workflowv1alpha1.TaskPhaseCompleted), string(workflowv1alpha1.TaskPhaseError), string(workflowv1alpha1.TaskPhaseCanceled)}
			if !slices.Equal(m.Each.StateSet.List, want) {
				t.Errorf("%s: states %v, the API's phases %v", m.Name, m.Each.StateSet.List, want)
			}
		case m.Each.Gauge != nil:
			base := lookup(schema, m.Each.Gauge.Path)
			if base == nil {
				t.Errorf("%s: no %v in the schema", m.Name, m.Each.Gauge.Path)
				continue
			}
			for label, p := range m.Each.Gauge.LabelsFromPath {
				if lookup(base, p) == nil {
					t.Errorf("%s label %s: no %v under %v", m.Name, label, p, m.Each.Gauge.Path)
				}
			}
			value := lookup(base, m.Each.Gauge.ValueFrom)
			if value == nil {
				t.Errorf("%s: no value %v under %v", m.Name, m.Each.Gauge.ValueFrom, m.Each.Gauge.Path)
				continue
			}
			if isTime := value.Format == "date-time"; isTime != strings.HasSuffix(m.Name, "_timestamp_seconds") {
				t.Errorf("%s: a time (format %q) is named <what>_timestamp_seconds, and only a time", m.Name, value.Format)
			}
		default:
			t.Errorf("%s: neither StateSet nor Gauge", m.Name)
		}
	}
}

func ptrTrue() *bool { b := true; return &b }
