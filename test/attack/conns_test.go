package attack_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
)

// dialFrom opens n TCP connections from ip to base's host, sending nothing.
func dialFrom(t *testing.T, ip net.IP, base string, n int) []net.Conn {
	t.Helper()
	u, _ := url.Parse(base)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	var out []net.Conn
	for range n {
		c, err := d.Dial("tcp", u.Host)
		if err != nil {
			t.Fatalf("dial %d: %v", len(out), err)
		}
		out = append(out, c)
	}
	return out
}

// closedByPeer counts the connections the other side closed within wait (a read ends with EOF
// or a reset rather than the deadline).
func closedByPeer(conns []net.Conn, wait time.Duration) int {
	var closed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(wait)
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			buf := make([]byte, 512)
			for {
				_, err := c.Read(buf)
				var ne net.Error
				switch {
				case err == nil:
					continue // a TLS alert or an HTTP answer; the close follows
				case errors.As(err, &ne) && ne.Timeout():
				default:
					closed.Add(1)
				}
				return
			}
		})
	}
	wg.Wait()
	return int(closed.Load())
}

// 2,048 connections held from one address on each listener, sending nothing: every other
// address is served at once, and so are a newcomer on the attacker's own address and the
// aggregation layer; the listener closes every held connection (over the bound at once, the
// rest at the header deadline); afterwards goroutines and the connection counts are back.
func TestHeldConnections(t *testing.T) {
	const held = 2048
	ds := doors(t)
	baseline := runtime.NumGoroutine()
	for _, d := range ds {
		t.Run(d.name, func(t *testing.T) {
			open := func() float64 { return metric(t, frontdoor.ConnectionsMetric, "listener", d.name) }
			attackerIP := freshAddress()
			conns := dialFrom(t, attackerIP, d.base, held)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			path, header := d.victim(t, false)
			if a := send(sameAddressClient(freshAddress()), d.base+path, header...); !d.served(a) {
				t.Errorf("another address while %d connections are held: HTTP %d %.200s (%v)", held, a.status, a.body, a.err)
			}
			if a := send(sameAddressClient(attackerIP), d.base+path, header...); !d.served(a) {
				t.Errorf("a newcomer on the attacker's address: HTTP %d %.200s (%v)", a.status, a.body, a.err)
			}
			if d.name == "progress" {
				if err := aggregatedServed(t, path); err != nil {
					t.Errorf("the aggregation layer while %d connections are held: %v", held, err)
				}
			}
			if got := open(); got > float64(opts.MaxConnections) {
				t.Errorf("%v connections open on %s, bound %d", got, d.name, opts.MaxConnections)
			}
			if closed := closedByPeer(conns, 3*opts.Timeouts.Header); closed != held {
				t.Errorf("%d of %d held connections closed by the listener within 3× the header timeout", closed, held)
			}
		})
	}
	closeIdle()
	settled(t, baseline, 20)
	for _, d := range ds {
		gomega.NewWithT(t).Eventually(func() float64 { return metric(t, frontdoor.ConnectionsMetric, "listener", d.name) }).
			Should(gomega.BeNumerically("<=", 2), d.name+": connections back to (near) none")
	}
}

// Slow headers: clients that finish the TLS handshake and then send a request's headers a
// byte at a time are closed at the header deadline, however long they trickle; meanwhile
// the victim is served.
func TestSlowHeaders(t *testing.T) {
	const slow = 50
	d := doors(t)[0]
	attackerIP := freshAddress()
	conns := dialFrom(t, attackerIP, d.base, slow)
	var tlsConns []net.Conn
	for _, c := range conns {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // self-signed test endpoint
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tlsConns = append(tlsConns, tc)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range tlsConns {
		wg.Go(func() {
			for _, b := range []byte("GET /workflow/progress/AAAAAAAAAA HTTP/1.1\r\nHost: x\r\nX-Slow: ") {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
		})
	}
	path, header := d.victim(t, false)
	if a := send(sameAddressClient(attackerIP), d.base+path, header...); !d.served(a) {
		t.Errorf("the victim on the attacker's address: HTTP %d %.200s (%v)", a.status, a.body, a.err)
	}
	if closed := closedByPeer(tlsConns, 3*opts.Timeouts.Header); closed != slow {
		t.Errorf("%d of %d trickling clients closed within 3× the header timeout", closed, slow)
	}
	close(stop)
	wg.Wait()
	for _, c := range tlsConns {
		c.Close()
	}
}

// A client that re-opens every connection the listener closes, from the victim's own address,
// re-opens each at most once per eviction grace (a connection that never sent a byte lives out
// a grace rather than being closed at once), and every new connection the victim opens
// meanwhile is served: one that is sending its request outlives any number of silent ones.
func TestChurningHeldConnections(t *testing.T) {
	d := doors(t)[0]
	attackerIP := freshAddress()
	held := 2 * opts.MaxConnectionsPerAddress
	u, _ := url.Parse(d.base)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: attackerIP}}
	stop := make(chan struct{})
	var opened atomic.Int64
	var wg sync.WaitGroup
	for range held {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := dialer.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				opened.Add(1)
				go func() { <-stop; c.Close() }()
				_, _ = c.Read(make([]byte, 1)) // until the listener closes it
				c.Close()
			}
		})
	}
	time.Sleep(opts.Timeouts.Header / 2)
	start, before := time.Now(), opened.Load()
	path, header := d.victim(t, false)
	const tries = 20
	served := 0
	for range tries {
		c := sameAddressClient(attackerIP)
		c.Transport.(*http.Transport).DisableKeepAlives = true // a new connection each time
		if a := send(c, d.base+path, header...); d.served(a) {
			served++
		}
	}
	window, reopened := time.Since(start), opened.Load()-before
	close(stop)
	wg.Wait()
	if served != tries {
		t.Errorf("%d of %d new connections of the victim served while %d connections churned on its address", served, tries, held)
	}
	// Each of the attacker's connections re-opens at most once per grace, plus once.
	if limit := int64(held) * (int64(window/time.Second) + 2); reopened > limit {
		t.Errorf("the attacker re-opened %d connections in %s; at most %d with a grace of 1 s", reopened, window.Round(time.Millisecond), limit)
	}
}

// Every refusal is paced: a client flooding a listener without credentials (or with forged
// tokens, or asking the probes, or pushing to the ingest path) gets its address's budget of
// answers at once, then one answer per connection per tarpit — so it cannot make the listener
// do TLS handshakes as fast as the CPU allows. The bound counts answers in the window; a slower machine gives fewer.
func TestEveryRefusalIsPaced(t *testing.T) {
	const conns = 16
	for _, c := range []struct {
		door   int
		name   string
		header func() []string
	}{
		{0, "progress, no credential", func() []string { return nil }},
		{0, "progress, forged tokens", func() []string { return []string{"Authorization", "Bearer " + forgedToken(t)} }},
		{1, "metrics, no credential", func() []string { return nil }},
		{2, "probes", func() []string { return nil }},
		{3, "ingest, no credential", func() []string { return nil }},
		{3, "ingest, forged tokens", func() []string { return []string{"Authorization", "Bearer " + forgedToken(t)} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := allDoors(t)[c.door]
			client := sameAddressClient(freshAddress())
			client.Transport.(*http.Transport).MaxConnsPerHost = conns
			stop := time.Now().Add(3 * time.Second)
			var answered atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range conns {
				wg.Go(func() {
					for time.Now().Before(stop) {
						if a := d.send(client, d.base+d.path, c.header()...); a.err == nil {
							answered.Add(1)
						}
					}
				})
			}
			wg.Wait()
			window := time.Since(start)
			limit := int64(opts.FailedLoginBurst) + conns*(int64(window/time.Second)+2)
			if n := answered.Load(); n > limit {
				t.Errorf("%d answers to %d connections in %s; paced, at most %d", n, conns, window.Round(time.Millisecond), limit)
			}
		})
	}
}
