package e2e_test

import (
	"context"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serviceProxy stands in for a Service and kube-proxy where the operator's replicas are local
// processes rather than pods: each replica has a Pod object (the harness gives the process
// POD_NAME and POD_NAMESPACE, so it labels that Pod as it would its own), and each accepted
// connection goes to a replica whose Pod the Service's selector selects on the API server at
// that moment, its port from ports. A replica whose process is down is skipped, as the kubelet
// marks a pod whose container died not ready and its endpoint goes.
type serviceProxy struct {
	ln        net.Listener
	namespace string
	selector  map[string]string
	ports     map[string]int // Pod name → the replica's port on 127.0.0.1
}

// startServiceProxy listens on loopback until the test ends.
func startServiceProxy(t *testing.T, namespace string, selector map[string]string, ports map[string]int) *serviceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &serviceProxy{ln: ln, namespace: namespace, selector: selector, ports: ports}
	done := make(chan struct{})
	go func() { defer close(done); p.serve() }()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return p
}

// URL is the proxy's base URL (the Service's https://NAME.NAMESPACE.svc).
func (p *serviceProxy) URL() string { return "https://" + p.ln.Addr().String() }

func (p *serviceProxy) serve() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns.Go(func() { p.forward(c) })
	}
}

// forward joins c to a selected replica, or closes it when none answers (no endpoints).
func (p *serviceProxy) forward(c net.Conn) {
	defer func() { _ = c.Close() }()
	for _, port := range p.endpoints() {
		up, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			continue // the process is down
		}
		defer func() { _ = up.Close() }()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
		<-done // either side closing ends both
		return
	}
}

// endpoints are the ports of the replicas whose Pods the selector selects, by Pod name.
func (p *serviceProxy) endpoints() []int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pods := &corev1.PodList{}
	if err := k8sClient.List(ctx, pods, client.InNamespace(p.namespace), client.MatchingLabels(p.selector)); err != nil {
		return nil
	}
	var ports []int
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for _, pod := range pods.Items {
		if port, ok := p.ports[pod.Name]; ok {
			ports = append(ports, port)
		}
	}
	return ports
}
