// Command helmchart writes the operator's Helm chart (make helm: dist/chart) from the kustomize
// configuration, the way kubebuilder's helm plugin does, so the chart and config/default never
// drift: every object `kubectl kustomize config/default` renders becomes a template, with the
// namespace, the image and the replicas made values. The Namespace itself is left to Helm
// (`helm install --namespace … --create-namespace`).
//
//	go run ./hack/helmchart -out dist/chart -version 0.1.0
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The values the chart templates, and the literals of config/default they replace.
const (
	namespace    = "workflowtask-system"
	defaultImage = "workflowtask-operator:dev"
)

func main() {
	out := flag.String("out", "dist/chart", "directory to write the chart to (emptied first)")
	version := flag.String("version", "0.1.0", "the chart's version and appVersion")
	kustomizeDir := flag.String("kustomize", "config/default", "the kustomize directory the chart is made from")
	flag.Parse()
	if err := run(*kustomizeDir, *out, *version); err != nil {
		fmt.Fprintln(os.Stderr, "helmchart:", err)
		os.Exit(1)
	}
}

func run(dir, out, version string) error {
	rendered, err := exec.Command("kubectl", "kustomize", dir).Output()
	if err != nil {
		return fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(out, "templates"), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"Chart.yaml":  fmt.Sprintf(chartYAML, version, version),
		"values.yaml": valuesYAML,
		".helmignore": "*.orig\n*.tmp\n",
		"README.md":   readme,
	}
	for i, doc := range bytes.Split(rendered, []byte("\n---\n")) {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return fmt.Errorf("object %d: %w", i, err)
		}
		if obj.GetKind() == "Namespace" && obj.GetName() == namespace {
			continue // Helm's: --namespace, --create-namespace
		}
		name := fmt.Sprintf("templates/%03d-%s-%s.yaml", i, strings.ToLower(obj.GetKind()), obj.GetName())
		files[name] = template(obj.GetKind(), string(doc))
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(out, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var replicas = regexp.MustCompile(`(?m)^(  replicas: )\d+$`)

// template makes one rendered object a template: Helm's {{ }} in the object escaped, then the
// namespace, the image and (for the manager's Deployment) the replicas made values.
func template(kind, doc string) string {
	doc = strings.ReplaceAll(doc, "{{", `{{"{{"}}`)
	doc = strings.ReplaceAll(doc, namespace, "{{ .Release.Namespace }}")
	doc = strings.ReplaceAll(doc, defaultImage, `{{ .Values.image.repository }}:{{ .Values.image.tag }}`)
	if kind == "Deployment" {
		doc = replicas.ReplaceAllString(doc, "${1}{{ .Values.replicas }}")
	}
	return doc + "\n"
}

const chartYAML = `apiVersion: v2
name: workflowtask-operator
description: Runs file-processing work as Kubernetes Jobs and shows how far each task has got (WorkflowTasks, the progress endpoint, notifications).
type: application
version: %s
appVersion: %q
kubeVersion: ">=1.30.0-0"
`

const valuesYAML = `# Values of the workflowtask-operator chart. The chart is made from config/default (make helm):
# everything else is as config/default ships it.
image:
  # repository and tag of the operator's image (make image-push IMG=<repository>:<tag>); the
  # progress-file sidecar runs the same image.
  repository: workflowtask-operator
  tag: dev
# replicas of the manager (leader election: one reconciles and takes pushed progress; the others
# serve the endpoint).
replicas: 1
`

const readme = `# workflowtask-operator chart

Made from the operator's kustomize configuration (config/default) by ` + "`make helm`" + `: the same
objects, with the namespace (the release's), the image and the replicas as values. Kubernetes
1.30 or newer.

    helm install workflowtask dist/chart --namespace workflowtask-system --create-namespace \
      --set image.repository=<registry>/workflowtask-operator --set image.tag=<tag>
    helm upgrade workflowtask dist/chart --namespace workflowtask-system --reuse-values
    helm uninstall workflowtask --namespace workflowtask-system

| value | default | |
| --- | --- | --- |
| ` + "`image.repository`, `image.tag`" + ` | ` + "`workflowtask-operator`, `dev`" + ` | the operator's image (also the progress-file sidecar's) |
| ` + "`replicas`" + ` | 1 | the manager's replicas (one leader) |

The CustomResourceDefinition is a template (upgraded with the chart). Uninstalling removes every
object the chart rendered — the CRD, and with it every WorkflowTask — and keeps the namespace
(which ` + "`--create-namespace`" + ` made), with the leader-election Lease and the Events the operator
wrote there. The real-node lane installs, upgrades and uninstalls it (test/node).
`
