package config_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// installerImage is the image the test builds dist/install.yaml for.
const installerImage = "registry.example/taskops/workflowtask-operator:v0.0.0-config"

// Every shipped configuration — config/default, config/split (the manager and the endpoint's own
// Deployment), config/certmanager, and dist/install.yaml as hack/build-installer.sh writes it —
// runs each container of the operator's binary with --progress-token-audiences set to
// apiserver.TokenAudience and nothing else: a token a client sends to the endpoint is then
// useless against kube-apiserver.
func TestShippedTokenAudience(t *testing.T) {
	for _, c := range []struct {
		name       string
		render     func(*testing.T) []*unstructured.Unstructured
		image      string
		containers int // of the operator's binary
	}{
		{"config/default", kustomize("default"), "workflowtask-operator:dev", 1},
		{"config/split", kustomize("split"), "workflowtask-operator:dev", 2},
		{"config/certmanager", kustomize("certmanager"), "workflowtask-operator:dev", 1},
		{"dist/install.yaml", buildInstaller, installerImage, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			found := 0
			for _, o := range c.render(t) {
				for _, ctr := range podContainers(t, o) {
					if ctr.image != c.image {
						continue
					}
					found++
					if got := tokenAudiences(ctr.args); !slices.Equal(got, []string{apiserver.TokenAudience}) {
						t.Errorf("%s %s, container %s: token audiences %q, want [%s]; args %q",
							o.GetKind(), o.GetName(), ctr.name, got, apiserver.TokenAudience, ctr.args)
					}
				}
			}
			if found != c.containers {
				t.Errorf("%d containers run %s, want %d", found, c.image, c.containers)
			}
		})
	}
}

// kustomize renders config/dir with kubectl's kustomize: a shipped configuration's objects.
func kustomize(dir string) func(*testing.T) []*unstructured.Unstructured {
	return func(t *testing.T) []*unstructured.Unstructured {
		t.Helper()
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			t.Fatalf("kubectl: %v", err)
		}
		objs, err := testenv.Kustomize(kubectl, dir)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
}

// buildInstaller runs hack/build-installer.sh into a temporary file and reads it back.
func buildInstaller(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	installer := filepath.Join(t.TempDir(), "install.yaml")
	cmd := exec.Command(filepath.Join(abs, "hack", "build-installer.sh"))
	cmd.Env = append(os.Environ(), "IMG="+installerImage, "INSTALLER="+installer)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/build-installer.sh: %v\n%s", err, out)
	}
	objs, err := testenv.ReadObjects(installer)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// container is what the test reads of a container: its name, image, command and arguments.
type container struct {
	name, image string
	args        []string
}

// podContainers are the containers and init containers of an object's pod template
// (spec.template.spec: Deployments and the other workloads), none for other objects.
func podContainers(t *testing.T, o *unstructured.Unstructured) []container {
	t.Helper()
	var out []container
	for _, field := range []string{"initContainers", "containers"} {
		list, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", field)
		if err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
		for _, item := range list {
			m, _ := item.(map[string]any)
			name, _, _ := unstructured.NestedString(m, "name")
			image, _, _ := unstructured.NestedString(m, "image")
			command, _, _ := unstructured.NestedStringSlice(m, "command")
			args, _, _ := unstructured.NestedStringSlice(m, "args")
			out = append(out, container{name: name, image: image, args: append(command, args...)})
		}
	}
	return out
}

// tokenAudiences are the audiences --progress-token-audiences gives in args, read as the flag
// reads them (apiserver.Options.AddFlags): each occurrence, with one or two dashes, "=" or the
// next argument, adds its comma-separated values.
func tokenAudiences(args []string) []string {
	const name = "progress-token-audiences"
	var audiences []string
	for i := 0; i < len(args); i++ {
		flag, ok := strings.CutPrefix(args[i], "-")
		if !ok {
			continue
		}
		flag = strings.TrimPrefix(flag, "-")
		var value string
		switch {
		case flag == name && i+1 < len(args):
			i++
			value = args[i]
		case strings.HasPrefix(flag, name+"="):
			value = strings.TrimPrefix(flag, name+"=")
		default:
			continue
		}
		for _, a := range strings.Split(value, ",") {
			if a = strings.TrimSpace(a); a != "" {
				audiences = append(audiences, a)
			}
		}
	}
	return audiences
}
