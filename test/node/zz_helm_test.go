package node_test

// This file's name sorts last on purpose: its test replaces the installer's operator with the
// Helm chart's, which changes the ingest Service's address every other test of the lane uses.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/controllers"
)

// The Helm chart (make helm) on the real node: the installer's operator removed, `helm install`
// brings the operator up as its Deployment from the image built here and it runs a task to
// Completed (progress pushed to the chart's ingest Service); `helm upgrade --set replicas=2`
// rolls two replicas, one leading; `helm uninstall` removes every object the chart rendered,
// leaving only what the chart's README says it keeps (the namespace, the leader Lease).
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	helm := filepath.Join(abs, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("%v: make test builds helm (make helm)", err)
	}
	chart := filepath.Join(dir, "chart")
	if out, err := command("go", "run", "./hack/helmchart", "-out", chart); err != nil {
		t.Fatalf("hack/helmchart: %v\n%s", err, out)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(helm, append(args, "--kubeconfig", cluster.Kubeconfig)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	g := gomega.NewWithT(t)

	kubectl(t, "delete", "-f", filepath.Join(dir, "install.yaml"), "--wait=true", "--timeout=180s")
	g.Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "namespace", operatorNamespace, "--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).WithTimeout(3 * time.Minute).Should(gomega.BeEmpty())

	repo, tag, _ := strings.Cut(operatorImage, ":")
	run("install", "workflowtask", chart, "--namespace", operatorNamespace, "--create-namespace",
		"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--wait", "--timeout", "4m")
	kubectl(t, "wait", "--for=condition=Available", "apiservice/v1alpha1.progress.taskops.dev", "--timeout=120s")
	route := routeService(t, operatorNamespace, controllers.IngestServiceName)
	const name = "helm-relocate"
	manifest := fmt.Sprintf(`apiVersion: workflow.taskops.dev/v1alpha1
kind: WorkflowTask
metadata:
  name: %s
  namespace: default
spec:
  type: relocate
  owner: system:serviceaccount:default:alice
  template:
    spec:
      restartPolicy: Never
      hostAliases: [{ip: %q, hostnames: [%q]}]
      containers:
      - name: worker
        image: %s
        imagePullPolicy: Never
        args: ["--type", "relocate", "--pace", "0.05", "--dir", "/work"]
        volumeMounts: [{name: work, mountPath: /work}]
      volumes: [{name: work, emptyDir: {}}]
`, name, route.ClusterIP, ingestHost, workerImage)
	applyYAML(t, name+".yaml", manifest)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", name, "{.status.phase}") }).
		WithTimeout(3 * time.Minute).Should(gomega.Equal("Completed"))
	if got := jsonpath(t, "default", "wft", name, "{.status.progress[0].current}/{.status.progress[0].total}"); got != "30/30" {
		t.Errorf("progress %q", got)
	}

	run("upgrade", "workflowtask", chart, "--namespace", operatorNamespace, "--reuse-values", "--set", "replicas=2", "--wait", "--timeout", "4m")
	if got := jsonpath(t, operatorNamespace, "deployment", "workflowtask-controller-manager", "{.status.readyReplicas}"); got != "2" {
		t.Errorf("after the upgrade: %s ready replicas, want 2", got)
	}
	if got := jsonpath(t, "default", "wft", name, "{.status.phase}"); got != "Completed" {
		t.Errorf("after the upgrade the task is %q", got)
	}

	rendered := run("template", "workflowtask", chart, "--namespace", operatorNamespace)
	objs := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(objs, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	run("uninstall", "workflowtask", "--namespace", operatorNamespace, "--wait", "--timeout", "4m")
	g.Eventually(func() string {
		out, _ := cluster.Kubectl(context.Background(), "get", "-f", objs, "--ignore-not-found", "-o", "name")
		return strings.TrimSpace(string(out))
	}).WithTimeout(2*time.Minute).Should(gomega.BeEmpty(), "every object the chart rendered is gone")
	left := strings.Fields(kubectl(t, "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings", "-n", operatorNamespace, "-o", "name"))
	for _, o := range left {
		if o != "configmap/kube-root-ca.crt" && o != "serviceaccount/default" { // the namespace's own
			t.Errorf("left in %s after uninstall: %s (the chart's README says what it keeps)", operatorNamespace, o)
		}
	}
}
