package devcluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// routeWait is how long RouteService waits for the Service's first ready endpoint.
const routeWait = 2 * time.Minute

// ServiceRoute is a Service's ClusterIP port routed on the real node by RouteService.
type ServiceRoute struct {
	// ClusterIP is the Service's address: what a pod's hostAliases map its name to (the node
	// has no cluster DNS).
	ClusterIP string
	// Address is the routed ClusterIP:port.
	Address string
	// Done is closed once the route stopped following the Service (its context ended).
	Done <-chan struct{}
}

// HostAliases are the pod spec's hostAliases that map hostnames (the Service's DNS names) to
// its ClusterIP.
func (r *ServiceRoute) HostAliases(hostnames ...string) []corev1.HostAlias {
	return []corev1.HostAlias{{IP: r.ClusterIP, Hostnames: hostnames}}
}

// RouteService stands in for kube-proxy on the real node (RealNodeUp) for one port of a
// Service: it routes the Service's ClusterIP port to the ready endpoints of its EndpointSlices
// (kube-controller-manager's EndpointSlice controller keeps them) with hack/real-node.sh route,
// and does so again on every change of the slices until ctx ends. portName names the Service's
// port; "" takes a Service's only port. It returns once the address routes to an endpoint (or
// after two minutes with an error, the route still following the slices until ctx ends); the
// route's Done is closed when it has stopped. Its messages go to the cluster's Out.
func (c *Cluster) RouteService(ctx context.Context, namespace, name, portName string) (*ServiceRoute, error) {
	wc, err := client.NewWithWatch(c.Admin, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("a watching client: %w", err)
	}
	svc := &corev1.Service{}
	if err := wc.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, svc); err != nil {
		return nil, fmt.Errorf("the Service %s/%s: %w", namespace, name, err)
	}
	port, err := servicePort(svc, portName)
	if err != nil {
		return nil, err
	}
	address := fmt.Sprintf("%s:%d", svc.Spec.ClusterIP, port.Port)
	opts := []client.ListOption{client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: name}}

	routed, done := make(chan struct{}), make(chan struct{})
	var last []string
	synced := false
	sync := func() {
		list := &discoveryv1.EndpointSliceList{}
		if err := wc.List(ctx, list, opts...); err != nil {
			if ctx.Err() == nil {
				_, _ = fmt.Fprintf(c.Out, "route: the EndpointSlices of %s/%s: %v\n", namespace, name, err)
			}
			return
		}
		endpoints := readyEndpoints(list.Items, port.Name)
		if synced && slices.Equal(endpoints, last) {
			return
		}
		if err := c.realNode(ctx, "", append([]string{"route", address}, endpoints...)...); err != nil {
			if ctx.Err() == nil {
				_, _ = fmt.Fprintf(c.Out, "route: %s/%s: %v\n", namespace, name, err)
			}
			return
		}
		last, synced = endpoints, true
		if len(endpoints) > 0 {
			select {
			case <-routed:
			default:
				close(routed)
			}
		}
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			sync()
			w, err := wc.Watch(ctx, &discoveryv1.EndpointSliceList{}, opts...)
			if err != nil {
				if ctx.Err() == nil {
					_, _ = fmt.Fprintf(c.Out, "route: watching the EndpointSlices of %s/%s: %v\n", namespace, name, err)
					time.Sleep(time.Second)
				}
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					break
				}
				sync() // a Service has a slice or two: read them all again
			}
			w.Stop()
		}
	}()
	r := &ServiceRoute{ClusterIP: svc.Spec.ClusterIP, Address: address, Done: done}
	select {
	case <-routed:
		return r, nil
	case <-ctx.Done():
		return r, fmt.Errorf("routing %s/%s: %w", namespace, name, ctx.Err())
	case <-time.After(routeWait):
		return r, fmt.Errorf("the Service %s/%s got no ready endpoint within %s", namespace, name, routeWait)
	}
}

// servicePort is the Service's port named portName ("": its only port), when the Service has a
// ClusterIP to route.
func servicePort(svc *corev1.Service, portName string) (corev1.ServicePort, error) {
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return corev1.ServicePort{}, fmt.Errorf("the Service %s/%s has no ClusterIP (%q)", svc.Namespace, svc.Name, svc.Spec.ClusterIP)
	}
	if portName == "" {
		if len(svc.Spec.Ports) != 1 {
			return corev1.ServicePort{}, fmt.Errorf("the Service %s/%s has %d ports: name one", svc.Namespace, svc.Name, len(svc.Spec.Ports))
		}
		return svc.Spec.Ports[0], nil
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == portName {
			return p, nil
		}
	}
	return corev1.ServicePort{}, fmt.Errorf("the Service %s/%s has no port %q", svc.Namespace, svc.Name, portName)
}

// readyEndpoints are the slices' ready IPv4 endpoints as IP:port for the Service port portName,
// sorted (an endpoint without the Ready condition counts as ready, as EndpointSlice says).
func readyEndpoints(items []discoveryv1.EndpointSlice, portName string) []string {
	var eps []string
	for _, s := range items {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready || len(e.Addresses) == 0 {
				continue
			}
			eps = append(eps, e.Addresses[0]+":"+strconv.Itoa(int(port)))
		}
	}
	slices.Sort(eps)
	return eps
}
