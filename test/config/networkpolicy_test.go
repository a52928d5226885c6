package config_test

import (
	"maps"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The NetworkPolicy example lets only the monitoring namespace reach the metrics port (8443),
// keeps the probes' port (8081) open to the kubelet, and opens no port to everyone beyond it.
func TestNetworkPolicyPorts(t *testing.T) {
	var np networkingv1.NetworkPolicy
	readStrict(t, "config/networkpolicy/progress.yaml", &np)
	monitoring := metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	var metricsRules, probeRules int
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 {
			t.Errorf("rule %d opens every port", i)
		}
		ports := make([]int32, 0, len(rule.Ports))
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Errorf("rule %d opens every port", i)
				continue
			}
			ports = append(ports, p.Port.IntVal)
		}
		if slices.Contains(ports, 8443) {
			metricsRules++
			if len(ports) != 1 || len(rule.From) != 1 || rule.From[0].PodSelector != nil || rule.From[0].IPBlock != nil ||
				rule.From[0].NamespaceSelector == nil || !equalSelectors(*rule.From[0].NamespaceSelector, monitoring) {
				t.Errorf("rule %d lets %+v reach %v, want the namespace monitoring to reach 8443 only", i, rule.From, ports)
			}
		}
		if len(rule.From) == 0 {
			if !slices.Equal(ports, []int32{8081}) {
				t.Errorf("rule %d opens %v to everyone, want only the probes' 8081", i, ports)
			}
			probeRules++
		}
	}
	if metricsRules != 1 || probeRules != 1 {
		t.Errorf("%d rules for the metrics port, %d for the probes; want one each", metricsRules, probeRules)
	}
}

func equalSelectors(a, b metav1.LabelSelector) bool {
	return len(a.MatchExpressions) == 0 && len(b.MatchExpressions) == 0 && maps.Equal(a.MatchLabels, b.MatchLabels)
}
