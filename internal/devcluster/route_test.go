package devcluster

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The route goes to the slices' ready IPv4 endpoints on the named port, sorted: not-ready ones,
// other address types, slices without the port and endpoints without an address are left out;
// an endpoint without the Ready condition counts as ready.
func TestReadyEndpoints(t *testing.T) {
	ep := func(ip string, ready *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	port := func(name string, p int32) discoveryv1.EndpointPort {
		return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(p)}
	}
	items := []discoveryv1.EndpointSlice{
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("other", 80), port("https", 9443)},
			Endpoints: []discoveryv1.Endpoint{ep("10.88.0.9", ptr.To(true)), ep("10.88.0.3", nil), ep("10.88.0.4", ptr.To(false)), {}}},
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("https", 9443)},
			Endpoints: []discoveryv1.Endpoint{ep("10.88.0.5", ptr.To(true))}},
		{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("other", 80)},
			Endpoints: []discoveryv1.Endpoint{ep("10.88.0.6", ptr.To(true))}},
		{AddressType: discoveryv1.AddressTypeIPv6, Ports: []discoveryv1.EndpointPort{port("https", 9443)},
			Endpoints: []discoveryv1.Endpoint{ep("fd00::1", ptr.To(true))}},
	}
	want := []string{"10.88.0.3:9443", "10.88.0.5:9443", "10.88.0.9:9443"}
	if got := readyEndpoints(items, "https"); !slices.Equal(got, want) {
		t.Errorf("readyEndpoints = %q, want %q", got, want)
	}
	if got := readyEndpoints(items, "none"); len(got) != 0 {
		t.Errorf("readyEndpoints for a port no slice has = %q, want none", got)
	}
	// A Service's single unnamed port: the slices name it "".
	unnamed := []discoveryv1.EndpointSlice{{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{port("", 9443)},
		Endpoints: []discoveryv1.Endpoint{ep("10.88.0.7", ptr.To(true))}}}
	if got := readyEndpoints(unnamed, ""); !slices.Equal(got, []string{"10.88.0.7:9443"}) {
		t.Errorf("readyEndpoints of an unnamed port = %q", got)
	}
}

// The routed port: the only one when none is named, else the named one; a Service without a
// ClusterIP (headless) has nothing to route.
func TestServicePort(t *testing.T) {
	svc := func(ip string, names ...string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc"}, Spec: corev1.ServiceSpec{ClusterIP: ip}}
		for i, n := range names {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: n, Port: int32(443 + i)})
		}
		return s
	}
	for _, c := range []struct {
		name     string
		svc      *corev1.Service
		portName string
		want     int32 // 0: an error
	}{
		{"the only port", svc("10.96.0.20", "https"), "", 443},
		{"named", svc("10.96.0.20", "https", "metrics"), "metrics", 444},
		{"two ports, none named", svc("10.96.0.20", "https", "metrics"), "", 0},
		{"no such port", svc("10.96.0.20", "https"), "metrics", 0},
		{"headless", svc(corev1.ClusterIPNone, "https"), "", 0},
		{"no address", svc("", "https"), "", 0},
	} {
		p, err := servicePort(c.svc, c.portName)
		if c.want == 0 && err == nil || c.want != 0 && (err != nil || p.Port != c.want) {
			t.Errorf("%s: servicePort = %d, %v; want %d", c.name, p.Port, err, c.want)
		}
	}
}

// A route's hostAliases map the names to its ClusterIP.
func TestServiceRouteHostAliases(t *testing.T) {
	r := &ServiceRoute{ClusterIP: "10.96.0.20"}
	got := r.HostAliases("svc.ns.svc", "svc.ns")
	if len(got) != 1 || got[0].IP != "10.96.0.20" || !slices.Equal(got[0].Hostnames, []string{"svc.ns.svc", "svc.ns"}) {
		t.Errorf("HostAliases = %+v", got)
	}
}
