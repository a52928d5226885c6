package devcluster

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// RealSamples writes config/samples/ for a real node into dir and returns dir: each task's pod
// runs workerImage (the sample worker) on its type's work in an emptyDir — the samples' busybox
// scripts would need an image registry; their progress sidecar stays. hostAliases, when given,
// go in each task's pod template: the real node has no cluster DNS, so a pod that pushes its
// progress to the ingest Service needs its name mapped to the ClusterIP (ServiceRoute.HostAliases).
func RealSamples(root, dir, workerImage string, hostAliases []corev1.HostAlias) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &u.Object); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		typ, _, _ := unstructured.NestedString(u.Object, "spec", "type")
		worker := map[string]any{
			"name": "worker", "image": workerImage, "imagePullPolicy": "Never",
			"args":         []any{"--type", typ, "--dir", "/work"},
			"volumeMounts": []any{map[string]any{"name": "work", "mountPath": "/work"}},
		}
		if err := unstructured.SetNestedSlice(u.Object, []any{worker}, "spec", "template", "spec", "containers"); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		if err := unstructured.SetNestedSlice(u.Object, []any{map[string]any{"name": "work", "emptyDir": map[string]any{}}}, "spec", "template", "spec", "volumes"); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		if len(hostAliases) > 0 {
			if err := unstructured.SetNestedSlice(u.Object, hostAliasesField(hostAliases), "spec", "template", "spec", "hostAliases"); err != nil {
				return "", fmt.Errorf("%s: %w", f, err)
			}
		}
		out, err := yaml.Marshal(u.Object)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), out, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// hostAliasesField is hostAliases as the pod spec's field in an unstructured object.
func hostAliasesField(hostAliases []corev1.HostAlias) []any {
	field := make([]any, 0, len(hostAliases))
	for _, a := range hostAliases {
		names := make([]any, 0, len(a.Hostnames))
		for _, n := range a.Hostnames {
			names = append(names, n)
		}
		field = append(field, map[string]any{"ip": a.IP, "hostnames": names})
	}
	return field
}
