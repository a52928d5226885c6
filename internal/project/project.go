// Package project knows where this repository is and which types it talks about: what the
// tests, the local cluster (make run) and the image builder share, without linking envtest.
package project

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Module is the operator's Go module.
const Module = "github.com/taskops/workflowtask-operator"

// Scheme knows the built-in types and the WorkflowTask API.
var Scheme = apiruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(workflowv1alpha1.AddToScheme(Scheme))
}

// Root returns the root of this repository: the nearest parent of the working directory holding
// the operator's go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module "+Module+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of " + Module + " above the working directory")
		}
		dir = parent
	}
}
