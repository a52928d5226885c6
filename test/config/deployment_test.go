package config_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

// The operator's GOMEMLIMITs stay below their containers' memory limits, close enough to them to
// matter: a soft limit above the hard one is no limit, and one far below makes the garbage
// collector run for nothing.
func TestMemoryLimits(t *testing.T) {
	for _, c := range []struct{ file, container string }{
		{"config/manager/manager.yaml", "manager"},
		{"config/endpoint/deployment.yaml", "endpoint"},
	} {
		t.Run(c.container, func(t *testing.T) {
			container, err := testenv.DeploymentContainer(c.file, c.container)
			if err != nil {
				t.Fatal(err)
			}
			limit, ok := container.Resources.Limits.Memory().AsInt64()
			if !ok || limit == 0 {
				t.Fatalf("no memory limit: %v", container.Resources)
			}
			for _, e := range container.Env {
				if e.Name != "GOMEMLIMIT" {
					continue
				}
				soft, err := parseGoMemLimit(e.Value)
				if err != nil {
					t.Fatal(err)
				}
				if soft >= limit || soft < limit*3/4 {
					t.Errorf("GOMEMLIMIT %s is %.0f%% of the memory limit %s; want 75%%..<100%%", e.Value, 100*float64(soft)/float64(limit), container.Resources.Limits.Memory())
				}
				return
			}
			t.Fatal("no GOMEMLIMIT")
		})
	}
}

// parseGoMemLimit reads GOMEMLIMIT's syntax (runtime/debug.SetMemoryLimit): bytes, with an
// optional B, KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}
