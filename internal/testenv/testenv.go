// Package testenv starts the real control plane the tests run against: etcd and kube-apiserver
// built from Go modules by hack/build-controlplane.sh, driven by controller-runtime's envtest,
// with the project's CRDs installed.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/taskops/workflowtask-operator/internal/project"
)

// KubernetesVersion is the version of the control plane hack/build-controlplane.sh builds.
const KubernetesVersion = "1.37.2"

// Scheme knows the built-in types and the WorkflowTask API.
var Scheme = project.Scheme

// RepoRoot returns the root of this repository.
func RepoRoot() (string, error) { return project.Root() }

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
