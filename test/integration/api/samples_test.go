package api_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// Every file of config/samples/ is applied (server-side, as kubectl apply --server-side and
// GitOps tools do) to the real API server and accepted; they cover each main task type.
func TestSamplesAreAccepted(t *testing.T) {
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "samples"}}); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(raw, &u.Object); err != nil {
				t.Fatalf("parse: %v", err)
			}
			u.SetNamespace("samples")
			if err := k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("samples-test"), client.ForceOwnership); err != nil {
				t.Fatalf("refused by the API server: %v", err)
			}
			got := &workflowv1alpha1.WorkflowTask{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
				t.Fatal(err)
			}
			types = append(types, string(got.Spec.Type))
		})
	}
	slices.Sort(types)
	want := []string{"create_archive", "extract_archive", "import", "relocate", "remote_download", "upload"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("samples do not cover each main type once (-want +got):\n%s", diff)
	}
}

// kubectl finds tasks by plural, short name and category, and `kubectl get` shows the columns.
func TestDiscoveryAndPrinterColumns(t *testing.T) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion(workflowv1alpha1.GroupVersion.String())
	if err != nil {
		t.Fatal(err)
	}
	var res *metav1.APIResource
	for i := range list.APIResources {
		if list.APIResources[i].Name == "workflowtasks" {
			res = &list.APIResources[i]
		}
	}
	if res == nil {
		t.Fatalf("workflowtasks not served: %+v", list.APIResources)
	}
	if diff := cmp.Diff([]string{"wft"}, res.ShortNames); diff != "" {
		t.Errorf("short names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"workflow"}, res.Categories); diff != "" {
		t.Errorf("categories (-want +got):\n%s", diff)
	}
	if !res.Namespaced {
		t.Errorf("workflowtasks must be namespaced")
	}

	// The table kubectl get asks for.
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	table := &metav1.Table{}
	err = cs.RESTClient().Get().AbsPath("/apis/workflow.taskops.dev/v1alpha1/workflowtasks").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(context.Background()).Into(table)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	if diff := cmp.Diff([]string{"Name", "ID", "Type", "Owner", "Phase", "Progress", "Age"}, cols); diff != "" {
		t.Errorf("printer columns (-want +got):\n%s", diff)
	}
}
