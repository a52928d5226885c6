// Package api_test proves the WorkflowTask CRD's schema on a real kube-apiserver: what it
// accepts, what it refuses, and that each refusal names the field.
package api_test

import (
	"os"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Suite{}, func(e *testenv.Env) { cfg, k8sClient = e.Admin, e.Client }))
}
