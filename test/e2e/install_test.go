package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// make runs a make target in the repository against the local cluster.
func makeTarget(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// installObjects are the objects of dist/install.yaml.
func installObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.ReadObjects(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// The one-file installer as a user applies it: `make build-installer`, then dist/install.yaml
// applied server-side — every object accepted, the manager's pod spec admitted under the
// namespace's `restricted` Pod Security level — and `make undeploy` leaves nothing behind. The
// suite's own operator (config/local, the manager as a process) is stopped meanwhile and put
// back afterwards.
func TestInstaller(t *testing.T) {
	ctx := context.Background()
	const img = "registry.example/taskops/workflowtask-operator:v0.0.0-e2e"
	makeTarget(t, "build-installer", "IMG="+img)
	objs := installObjects(t)
	kinds := map[string]int{}
	for _, u := range objs {
		kinds[u.GetKind()]++
	}
	for _, k := range []string{"CustomResourceDefinition", "Namespace", "Deployment", "Service", "APIService", "ValidatingAdmissionPolicy",
		"ValidatingAdmissionPolicyBinding", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("dist/install.yaml has no %s", k)
		}
	}

	manager.Stop()
	defer func() { // the suite's own operator, as before
		if err := cluster.InstallOperator(ctx); err != nil {
			t.Fatal(err)
		}
		kubectl(t, "patch", "apiservice", "v1alpha1.progress.taskops.dev", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"service":{"port":%d}}}`, progressPort))
		if err := startManager(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	// Start from nothing of the operator's, as a user's cluster would be.
	kubectl(t, "delete", "--ignore-not-found", "--wait", "-k", "config/local")

	out := kubectl(t, "apply", "--server-side", "-f", "dist/install.yaml")
	if n := strings.Count(out, "serverside-applied"); n != len(objs) {
		t.Errorf("%d of %d objects applied:\n%s", n, len(objs), out)
	}
	got := strings.Fields(kubectl(t, "get", "-f", "dist/install.yaml", "-o", "name"))
	if len(got) != len(objs) {
		t.Errorf("%d of %d objects found after the apply: %v", len(got), len(objs), got)
	}
	if image := jsonpath(t, "workflowtask-system", "deployment", "workflowtask-controller-manager", "{.spec.template.spec.containers[0].image}"); image != img {
		t.Errorf("the Deployment runs %s, want %s", image, img)
	}

	// The manager's pod, as the ReplicaSet would create it, under the namespace's Pod Security
	// level (server-side dry run: admission runs, nothing is stored).
	if level := jsonpath(t, "", "namespace", "workflowtask-system", `{.metadata.labels.pod-security\.kubernetes\.io/enforce}`); level != "restricted" {
		t.Errorf("namespace Pod Security level %q", level)
	}
	var tmpl corev1.PodTemplateSpec
	if err := json.Unmarshal([]byte(kubectl(t, "get", "-n", "workflowtask-system", "deployment", "workflowtask-controller-manager", "-o", "jsonpath={.spec.template}")), &tmpl); err != nil {
		t.Fatal(err)
	}
	pod := corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	pod.APIVersion, pod.Kind, pod.Name, pod.Namespace = "v1", "Pod", "manager-psa-check", "workflowtask-system"
	podFile := filepath.Join(t.TempDir(), "pod.json")
	b, _ := json.Marshal(pod)
	if err := os.WriteFile(podFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := kubectlExit(t, "create", "--dry-run=server", "-f", podFile); code != 0 || strings.Contains(out, "Warning") {
		t.Errorf("the manager's pod under restricted Pod Security: exit %d\n%s", code, out)
	}
	// A pod that breaks the level is refused there (the check can fail).
	pod.Spec.SecurityContext = nil
	pod.Spec.Containers[0].SecurityContext = nil
	b, _ = json.Marshal(pod)
	_ = os.WriteFile(podFile, b, 0o644)
	if out, code := kubectlExit(t, "create", "--dry-run=server", "-f", podFile); code == 0 || !strings.Contains(out, "violates PodSecurity") {
		t.Errorf("a pod without the security context was admitted: %s", out)
	}

	makeTarget(t, "undeploy")
	gomega.NewWithT(t).Eventually(func() string {
		out, _ := kubectlExit(t, "get", "-f", "dist/install.yaml", "-o", "name", "--ignore-not-found")
		return strings.TrimSpace(out)
	}).Should(gomega.BeEmpty(), "make undeploy left objects behind")
}
