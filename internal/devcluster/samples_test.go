package devcluster

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Every sample, rewritten for a real node: the worker image alone in the pod (pulled never),
// working in an emptyDir, with the given hostAliases (none when not given), the progress
// sidecar kept.
func TestRealSamples(t *testing.T) {
	root := filepath.Join("..", "..")
	samples, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("config/samples: %d files, %v", len(samples), err)
	}
	aliases := []corev1.HostAlias{{IP: "10.96.0.20", Hostnames: []string{"svc.ns.svc"}}}
	for _, c := range []struct {
		name    string
		aliases []corev1.HostAlias
	}{{"with hostAliases", aliases}, {"without", nil}} {
		dir, err := RealSamples(root, t.TempDir(), "worker:test", c.aliases)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range samples {
			raw, err := os.ReadFile(filepath.Join(dir, filepath.Base(f)))
			if err != nil {
				t.Fatal(err)
			}
			task := &workflowv1alpha1.WorkflowTask{}
			if err := yaml.UnmarshalStrict(raw, task); err != nil {
				t.Fatalf("%s: %s: %v", c.name, f, err)
			}
			spec := task.Spec.Template.Spec
			if len(spec.Containers) != 1 || spec.Containers[0].Image != "worker:test" || spec.Containers[0].ImagePullPolicy != corev1.PullNever {
				t.Errorf("%s: %s: containers %+v, want the worker alone", c.name, f, spec.Containers)
			}
			if len(spec.Volumes) != 1 || spec.Volumes[0].EmptyDir == nil {
				t.Errorf("%s: %s: volumes %+v, want one emptyDir", c.name, f, spec.Volumes)
			}
			if task.Spec.ProgressSidecar == nil {
				t.Errorf("%s: %s: the progress sidecar is gone", c.name, f)
			}
			if got := spec.HostAliases; len(got) != len(c.aliases) || len(got) == 1 &&
				(got[0].IP != aliases[0].IP || len(got[0].Hostnames) != 1 || got[0].Hostnames[0] != aliases[0].Hostnames[0]) {
				t.Errorf("%s: %s: hostAliases %+v, want %+v", c.name, f, got, c.aliases)
			}
		}
	}
}
