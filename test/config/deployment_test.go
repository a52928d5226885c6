package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The manager's GOMEMLIMIT stays below its container's memory limit, close enough to it to
// matter: a soft limit above the hard one is no limit, and one far below makes the garbage
// collector run for nothing.
func TestManagerMemoryLimits(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "config/manager/manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.Contains(doc, "\nkind: Deployment\n") {
			if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "manager" {
			continue
		}
		limit, ok := c.Resources.Limits.Memory().AsInt64()
		if !ok || limit == 0 {
			t.Fatalf("the manager has no memory limit: %v", c.Resources)
		}
		for _, e := range c.Env {
			if e.Name != "GOMEMLIMIT" {
				continue
			}
			soft, err := parseGoMemLimit(e.Value)
			if err != nil {
				t.Fatal(err)
			}
			if soft >= limit || soft < limit*3/4 {
				t.Errorf("GOMEMLIMIT %s is %.0f%% of the memory limit %s; want 75%%..<100%%", e.Value, 100*float64(soft)/float64(limit), c.Resources.Limits.Memory())
			}
			return
		}
		t.Fatal("the manager has no GOMEMLIMIT")
	}
	t.Fatal("no manager container")
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
