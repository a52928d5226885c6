package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// config/notifications runs the manager with --notify-config naming sinks.yaml in a mounted
// ConfigMap that the overlay ships, and that file is a configuration the manager accepts.
func TestShippedNotifications(t *testing.T) {
	objs := kustomize("notifications")(t)
	d := findTyped[appsv1.Deployment](t, objs, "Deployment", "workflowtask-controller-manager")
	if d == nil {
		t.Fatal("no manager Deployment")
	}
	ctr := d.Spec.Template.Spec.Containers[0]
	file, ok := lastFlag(ctr.Args, "notify-config", false)
	if !ok {
		t.Fatalf("the manager runs without --notify-config: %v", ctr.Args)
	}
	var cmName, key string
	for _, m := range ctr.VolumeMounts {
		if rel, ok := strings.CutPrefix(file, m.MountPath+"/"); ok {
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					cmName, key = v.ConfigMap.Name, rel
				}
			}
		}
	}
	if cmName == "" {
		t.Fatalf("--notify-config=%s is in no mounted ConfigMap: mounts %+v", file, ctr.VolumeMounts)
	}
	cm := findTyped[corev1.ConfigMap](t, objs, "ConfigMap", cmName)
	if cm == nil || cm.Namespace != d.Namespace || cm.Data[key] == "" {
		t.Fatalf("ConfigMap %s/%s with key %s not shipped beside the Deployment (namespace %s): %+v", d.Namespace, cmName, key, d.Namespace, cm)
	}
	path := filepath.Join(t.TempDir(), key)
	if err := os.WriteFile(path, []byte(cm.Data[key]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := (&notify.Options{ConfigFile: path}).Load()
	if err != nil || len(cfg.Sinks) == 0 {
		t.Errorf("the shipped sinks.yaml: %d sinks, %v", len(cfg.Sinks), err)
	}
}
