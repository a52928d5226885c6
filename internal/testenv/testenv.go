// Package testenv starts the real control plane the tests run against: etcd and kube-apiserver
// built from Go modules by hack/build-controlplane.sh, driven by controller-runtime's envtest,
// with the project's CRDs installed.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// KubernetesVersion is the version of the control plane hack/build-controlplane.sh builds.
const KubernetesVersion = "1.37.2"

// Scheme knows the built-in types and the WorkflowTask API.
var Scheme = apiruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(workflowv1alpha1.AddToScheme(Scheme))
}

// RepoRoot returns the root of this repository: the nearest parent of the working directory
// holding the operator's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			len(b) > 0 && containsModuleLine(string(b)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/taskops/workflowtask-operator above the working directory")
		}
		dir = parent
	}
}

func containsModuleLine(gomod string) bool {
	const want = "module github.com/taskops/workflowtask-operator\n"
	return len(gomod) >= len(want) && gomod[:len(want)] == want
}

// AssetsDir returns where etcd and kube-apiserver are: $KUBEBUILDER_ASSETS, else the directory
// hack/build-controlplane.sh builds into. It fails, naming the fix, when they are not there:
// a test that needs the control plane must not pass silently without one.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s", KubernetesVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make controlplane` (or `make test`) to build it: %w", bin, dir, err)
		}
	}
	return dir, nil
}

// New returns an envtest environment for the real control plane with the CRDs of config/crd
// installed. Callers may adjust it (API server flags, users) before Start.
func New() (*envtest.Environment, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		Scheme:                Scheme,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}, nil
}

// Start is New followed by Start: a running control plane and an admin rest.Config for it.
func Start() (*envtest.Environment, *rest.Config, error) {
	env, err := New()
	if err != nil {
		return nil, nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting the control plane: %w", err)
	}
	return env, cfg, nil
}
