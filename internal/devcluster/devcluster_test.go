package devcluster

import (
	"slices"
	"testing"

	"github.com/taskops/workflowtask-operator/apiserver"
)

// The manager make run and the e2e suite start accepts bearer tokens for the dedicated audience
// only, as the shipped Deployments do (test/config checks those).
func TestManagerArgsSetTheTokenAudience(t *testing.T) {
	args := managerArgs("/tmp/kubeconfig", ManagerOptions{ProgressPort: 9443, ProbePort: 8081})
	i := slices.Index(args, "--progress-token-audiences")
	if i < 0 || i+1 >= len(args) || args[i+1] != apiserver.TokenAudience {
		t.Errorf("the manager's args %q lack --progress-token-audiences %s", args, apiserver.TokenAudience)
	}
}
