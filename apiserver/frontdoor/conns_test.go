package frontdoor

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn is a connection from an address; it only notes being closed or given a deadline.
type fakeConn struct {
	net.Conn // nil: only the methods below are used
	remote   net.Addr
	closed   atomic.Bool
	graced   atomic.Bool // given a deadline: closed by its server when it passes
}

func (c *fakeConn) RemoteAddr() net.Addr        { return c.remote }
func (c *fakeConn) Close() error                { c.closed.Store(true); return nil }
func (c *fakeConn) SetDeadline(time.Time) error { c.graced.Store(true); return nil }
func (c *fakeConn) Read(b []byte) (int, error)  { return len(b), nil }
func gone(c *trackedConn) bool                  { f := c.Conn.(*fakeConn); return f.closed.Load() || f.graced.Load() }
func closedNow(c *trackedConn) bool             { return c.Conn.(*fakeConn).closed.Load() }

func from(ip string) *fakeConn {
	return &fakeConn{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}
}

// admitAll admits n connections from ip and returns them.
func admitAll(t *testing.T, table *connTable, ip string, n int) []*trackedConn {
	t.Helper()
	var out []*trackedConn
	for range n {
		tc, ok := table.admit(from(ip))
		if !ok {
			t.Fatalf("a connection from %s was refused", ip)
		}
		out = append(out, tc)
	}
	return out
}

// Over the per-address bound, a newcomer takes the place of the oldest connection of its own
// address that never authenticated, then of the oldest idle authenticated one; a connection busy
// with an authenticated request is never closed, and other addresses are untouched.
func TestConnTablePerAddress(t *testing.T) {
	table := newConnTable(ConnLimits{Total: 100, PerAddress: 3})
	other := admitAll(t, table, "10.0.0.2", 3)
	conns := admitAll(t, table, "10.0.0.1", 3)
	conns[0].trusted.Store(true) // busy, authenticated
	conns[1].trusted.Store(true)
	conns[1].idle.Store(true) // idle, authenticated

	admitAll(t, table, "10.0.0.1", 1) // replaces the untrusted one
	if !gone(conns[2]) || gone(conns[0]) || gone(conns[1]) {
		t.Error("the newcomer did not replace the untrusted connection, or replaced another")
	}
	fresh := admitAll(t, table, "10.0.0.1", 1)[0]
	if fresh == nil || conns[2].el != nil {
		t.Fatal("bookkeeping")
	}
	// Now: conns[0] busy, conns[1] idle, and two untrusted newcomers; the oldest newcomer goes.
	admitAll(t, table, "10.0.0.1", 1)
	if gone(conns[1]) {
		t.Error("an idle authenticated connection went before an untrusted one")
	}
	for _, c := range other {
		if gone(c) {
			t.Error("another address lost a connection")
		}
	}
	if got := table.open(); got != 6 {
		t.Errorf("%d open, want 6", got)
	}

	// All busy and authenticated: no room, the newcomer is refused.
	busy := newConnTable(ConnLimits{Total: 100, PerAddress: 2})
	for _, c := range admitAll(t, busy, "10.0.0.1", 2) {
		c.trusted.Store(true)
	}
	if _, ok := busy.admit(from("10.0.0.1")); ok {
		t.Error("admitted over the bound with nothing to replace")
	}
	if busy.refused.Load() != 1 {
		t.Errorf("refused %d", busy.refused.Load())
	}
}

// Over the total, the victim comes from the address holding the most connections.
func TestConnTableTotalIsFair(t *testing.T) {
	table := newConnTable(ConnLimits{Total: 6, PerAddress: 6})
	hog := admitAll(t, table, "10.0.0.1", 5)
	small := admitAll(t, table, "10.0.0.2", 1)
	admitAll(t, table, "10.0.0.3", 1)
	if !gone(hog[0]) || gone(small[0]) {
		t.Error("the victim was not the hog's oldest connection")
	}
	if table.open() != 6 || table.evicted.Load() != 1 {
		t.Errorf("open %d, evicted %d", table.open(), table.evicted.Load())
	}
}

// Closing a connection frees its place, once; an evicted connection's own Close later does not
// free another's.
func TestConnTableClose(t *testing.T) {
	table := newConnTable(ConnLimits{Total: 2, PerAddress: 2})
	conns := admitAll(t, table, "2001:db8::1", 2)
	_ = conns[0].Close()
	_ = conns[0].Close()
	if table.open() != 1 {
		t.Errorf("open %d after closing one of two", table.open())
	}
	admitAll(t, table, "2001:db8::2", 1) // the same /64
	evictedNow := admitAll(t, table, "2001:db8::3", 1)
	_ = conns[1].Close() // evicted already: its Close frees nothing more
	if table.open() != 2 || evictedNow[0].el == nil {
		t.Errorf("open %d", table.open())
	}
}

// Accepting never waits: a listener whose table is full of busy connections closes the
// newcomer and goes on accepting.
func TestListenerNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	table := newConnTable(ConnLimits{Total: 1, PerAddress: 1})
	l := &limitedListener{Listener: ln, table: table}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	held := <-accepted
	tracked(held).trusted.Store(true) // busy with an authenticated request
	second, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Error("the refused connection was not closed")
	}
	held.(*trackedConn).trusted.Store(false) // now replaceable
	third, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if c := <-accepted; c == nil || table.refused.Load() != 1 || table.evicted.Load() != 1 {
		t.Errorf("refused %d, evicted %d", table.refused.Load(), table.evicted.Load())
	}
}

// A connection whose client is sending (its handshake, its request) outlives any number of
// connections held in silence from its own address; a silent victim is given a grace (a
// deadline) rather than closed at once, unless too many already wait, and one that sent
// something is closed at once.
func TestConnTableSilentGoFirst(t *testing.T) {
	table := newConnTable(ConnLimits{Total: 2, PerAddress: 2})
	talking := admitAll(t, table, "10.0.0.1", 1)[0]
	_, _ = talking.Read(make([]byte, 1)) // the client sent its ClientHello
	silent := admitAll(t, table, "10.0.0.1", 1)[0]
	for i := range 5 {
		newcomer := admitAll(t, table, "10.0.0.1", 1)[0]
		if gone(talking) {
			t.Fatal("the talking connection was evicted while a silent one was there")
		}
		// The first two (the bound: Total) live out a grace; later ones are closed at once.
		if graced := gone(silent) && !closedNow(silent); graced != (i < 2) || !gone(silent) {
			t.Errorf("victim %d: closed at once %t, given a grace %t", i, closedNow(silent), graced)
		}
		silent = newcomer
	}
	if table.dying.Load() != 2 { // bounded by Total: the third and later were closed at once
		t.Errorf("%d victims living out their grace, want the bound 2", table.dying.Load())
	}
	_, _ = silent.Read(make([]byte, 1))
	newcomer := admitAll(t, table, "10.0.0.1", 1)[0]
	if !closedNow(talking) && !closedNow(silent) || newcomer == nil {
		t.Error("with no silent connection left, the oldest talking one was not closed at once")
	}
}
