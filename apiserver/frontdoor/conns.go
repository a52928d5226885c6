package frontdoor

import (
	"container/list"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ConnLimits bound one listener's connections.
type ConnLimits struct {
	// Total bounds the connections open at once.
	Total int
	// PerAddress bounds the connections open at once from one client address (IPv6: its /64).
	PerAddress int
}

// connTable admits connections without ever blocking the accept loop (unlike
// netutil.LimitListener, whose full queue kept every new client out). A new connection over a
// bound takes the place of an older one that has not earned its keep: first the oldest that has
// sent nothing at all, then the oldest that never authenticated (in its handshake, its first
// request, or a tarpit), then the oldest idle authenticated one; a connection busy with an
// authenticated request is never closed. So a client that just connected and is sending its
// request outlives any number of connections held open in silence. Over PerAddress, the victim
// comes from the same address; over Total, from the address holding the most connections
// (max-min fair). When there is no victim, the new connection is closed.
//
// A victim that never sent a byte is not closed at once but given evictionGrace to live (outside
// the table's count): a client that re-opens whatever is closed then re-opens once per grace
// instead of as fast as it can, which would cost every other client its share of the CPU.
type connTable struct {
	limits ConnLimits

	mu     sync.Mutex
	total  int
	seq    uint64
	byAddr map[netip.Addr]*list.List // of *trackedConn, oldest first

	evicted, refused atomic.Int64
	dying            atomic.Int64 // victims living out their grace
}

// evictionGrace is how long a victim that never sent a byte lives on after its eviction.
const evictionGrace = time.Second

func newConnTable(limits ConnLimits) *connTable {
	return &connTable{limits: limits, byAddr: map[netip.Addr]*list.List{}}
}

// trackedConn is a connection the table holds.
type trackedConn struct {
	net.Conn
	table *connTable
	addr  netip.Addr
	seq   uint64
	el    *list.Element // nil once removed from the table
	// started: the client sent at least a byte; trusted: the connection carried an
	// authenticated request; idle: it waits between requests (http.Server's ConnState); dying:
	// evicted, living out its grace.
	started, trusted, idle, dying atomic.Bool
	closeOnce                     sync.Once
}

// Read notes that the client sent something.
func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.started.Load() {
		c.started.Store(true)
	}
	return n, err
}

// Close removes the connection from its table and closes it.
func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() {
		c.table.remove(c)
		if c.dying.Load() {
			c.table.dying.Add(-1)
		}
	})
	return c.Conn.Close()
}

// addressKey is the table's key of a client address: the IP, or an IPv6 address's /64.
func addressKey(a net.Addr) netip.Addr {
	var ip netip.Addr
	if tcp, ok := a.(*net.TCPAddr); ok {
		ip = tcp.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	return maskAddr(ip.Unmap())
}

// maskAddr keeps an IPv4 address whole and an IPv6 address's /64.
func maskAddr(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// admit takes c into the table, closing an older connection in its place when a bound is
// reached; false: no room (c is to be closed).
func (t *connTable) admit(c net.Conn) (*trackedConn, bool) {
	addr := addressKey(c.RemoteAddr())
	var victims [2]*trackedConn
	t.mu.Lock()
	conns := t.byAddr[addr]
	if conns != nil && conns.Len() >= t.limits.PerAddress {
		v := evictable(conns)
		if v == nil {
			t.mu.Unlock()
			t.refused.Add(1)
			return nil, false
		}
		t.removeLocked(v)
		victims[0] = v
	}
	if t.total >= t.limits.Total {
		v := t.globalVictimLocked()
		if v == nil {
			t.mu.Unlock()
			t.refused.Add(1)
			t.closeVictims(victims[:1])
			return nil, false
		}
		t.removeLocked(v)
		victims[1] = v
	}
	t.seq++
	tc := &trackedConn{Conn: c, table: t, addr: addr, seq: t.seq}
	if conns = t.byAddr[addr]; conns == nil {
		conns = list.New()
		t.byAddr[addr] = conns
	}
	tc.el = conns.PushBack(tc)
	t.total++
	t.mu.Unlock()
	t.closeVictims(victims[:])
	return tc, true
}

// closeVictims closes evicted connections: one that never sent a byte after evictionGrace (a
// deadline: its server goroutine ends it), unless too many already wait; any other at once.
func (t *connTable) closeVictims(victims []*trackedConn) {
	for _, v := range victims {
		if v == nil {
			continue
		}
		t.evicted.Add(1)
		if !v.started.Load() && t.dying.Load() < int64(t.limits.Total) && !v.dying.Swap(true) {
			t.dying.Add(1)
			_ = v.SetDeadline(time.Now().Add(evictionGrace))
			continue
		}
		_ = v.Conn.Close()
	}
}

// evictable is the connection of conns to close first: the oldest that has sent nothing, else
// the oldest that never authenticated, else the oldest idle authenticated one, else none.
func evictable(conns *list.List) *trackedConn {
	var quiet, idle *trackedConn
	for el := conns.Front(); el != nil; el = el.Next() {
		c := el.Value.(*trackedConn)
		switch {
		case c.trusted.Load():
			if idle == nil && c.idle.Load() {
				idle = c
			}
		case !c.started.Load():
			return c
		case quiet == nil:
			quiet = c
		}
	}
	if quiet != nil {
		return quiet
	}
	return idle
}

// globalVictimLocked is the connection to close when the table is full: the oldest untrusted
// one of the address holding the most connections that has one, else the oldest idle trusted
// connection anywhere.
func (t *connTable) globalVictimLocked() *trackedConn {
	var best *trackedConn
	bestLen := 0
	var idle *trackedConn
	for _, conns := range t.byAddr {
		if conns.Len() <= bestLen && idle != nil {
			continue
		}
		v := evictable(conns)
		switch {
		case v == nil:
		case !v.trusted.Load():
			if conns.Len() > bestLen {
				best, bestLen = v, conns.Len()
			}
		case idle == nil || v.seq < idle.seq:
			idle = v
		}
	}
	if best != nil {
		return best
	}
	return idle
}

func (t *connTable) remove(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(c)
}

func (t *connTable) removeLocked(c *trackedConn) {
	if c.el == nil {
		return
	}
	conns := t.byAddr[c.addr]
	conns.Remove(c.el)
	c.el = nil
	if conns.Len() == 0 {
		delete(t.byAddr, c.addr)
	}
	t.total--
}

// open is the number of connections the table holds.
func (t *connTable) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// limitedListener admits accepted connections through the table.
type limitedListener struct {
	net.Listener
	table *connTable
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := l.table.admit(c); ok {
			return tc, nil
		}
		_ = c.Close()
	}
}

// tracked returns the table's connection under c (a TLS connection or itself).
func tracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

type connKey struct{}

// connContext puts the request's connection in its context (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if t := tracked(c); t != nil {
		return context.WithValue(ctx, connKey{}, t)
	}
	return ctx
}

// connState follows whether a connection waits between requests (http.Server.ConnState).
func connState(c net.Conn, state http.ConnState) {
	if t := tracked(c); t != nil {
		switch state {
		case http.StateIdle:
			t.idle.Store(true)
		case http.StateActive:
			t.idle.Store(false)
		}
	}
}

// trust marks the request's connection as one that carried an authenticated request: it is
// kept alive, and closed for a newcomer only when idle.
func trust(w http.ResponseWriter, r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*trackedConn); ok {
		c.trusted.Store(true)
	}
	delete(w.Header(), "Connection")
}

// keepAlive keeps the request's connection open after an answer without trusting it: it may
// still be closed for a newcomer.
func keepAlive(w http.ResponseWriter) { delete(w.Header(), "Connection") }

// distrust undoes trust: the request's connection may be closed for a newcomer again, and is
// closed after the answer.
func distrust(w http.ResponseWriter, r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*trackedConn); ok {
		c.trusted.Store(false)
	}
	w.Header()["Connection"] = connectionClose
}
