package frontdoor

import (
	"net/http"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
)

// Each key has its budget, refilled over time; a refund gives a reservation back; the LRU of
// keys is bounded.
func TestBudget(t *testing.T) {
	b := newBudget(0.001, 3, 2)
	now := time.Now()
	for range 3 {
		if !b.reserve("a", now) {
			t.Fatal("over budget before spending it")
		}
	}
	if b.reserve("a", now) {
		t.Error("three of a budget of three: not over budget")
	}
	if !b.reserve("a", now.Add(1001*time.Second)) {
		t.Error("the budget did not refill")
	}
	if !b.reserve("b", now) {
		t.Error("one key's spending spent another's budget")
	}
	b.refund("b", now)
	for range 3 {
		if !b.reserve("b", now) {
			t.Error("a refunded reservation was not given back")
		}
	}
	b.reserve("c", now) // a is the least recently seen of three: forgotten
	if b.buckets.Len() != 2 {
		t.Errorf("%d keys held, bound 2", b.buckets.Len())
	}
}

// A token is known until the cache TTL or its own expiry, whichever is first.
func TestKnownTokens(t *testing.T) {
	k := newKnownTokens(10*time.Second, 10, false)
	now := time.Now()
	alice := &user.DefaultInfo{Name: "alice"}
	k.add("long", alice, now, time.Time{})
	k.add("short", alice, now, now.Add(time.Second))
	if u, ok := k.get("long", now.Add(9*time.Second)); !ok || u.GetName() != "alice" {
		t.Errorf("within the TTL: %v %v", u, ok)
	}
	if _, ok := k.get("long", now.Add(10*time.Second)); ok {
		t.Error("known after the TTL")
	}
	if _, ok := k.get("short", now.Add(2*time.Second)); ok {
		t.Error("known after the token expired")
	}
	if _, ok := k.get("other", now); ok {
		t.Error("an unseen token is known")
	}
	if _, ok := newKnownTokens(0, 10, false).get("long", now); ok {
		t.Error("known with no cache TTL")
	}
	// A pod's token (untilExpiry) is known until its own expiry, one without an expiry for the TTL.
	pods := newKnownTokens(10*time.Second, 10, true)
	pods.add("projected", alice, now, now.Add(time.Hour))
	pods.add("opaque", alice, now, time.Time{})
	if _, ok := pods.get("projected", now.Add(59*time.Minute)); !ok {
		t.Error("a pod's token forgotten before it expired")
	}
	if _, ok := pods.get("projected", now.Add(time.Hour)); ok {
		t.Error("a pod's token known after it expired")
	}
	if _, ok := pods.get("opaque", now.Add(10*time.Second)); ok {
		t.Error("a token without expiry known after the TTL")
	}
}

// The address a request is charged to: its peer (IPv6 by /64), or, behind a trusted proxy, the
// last X-Forwarded-For hop that is not a trusted proxy — never what a client wrote in front of
// what the proxies appended, and never X-Forwarded-For from an untrusted peer.
func TestClientKey(t *testing.T) {
	proxies, err := ParseTrustedProxies([]string{"10.0.0.0/8", " 192.168.1.1", ""})
	if err != nil {
		t.Fatal(err)
	}
	trusting := clients{proxies: proxies}
	cases := []struct {
		name, remote string
		xff          []string
		c            clients
		want         string
	}{
		{"IPv4", "10.1.2.3:5555", nil, clients{}, "10.1.2.3"},
		{"IPv6 by /64", "[2001:db8:1:2:aaaa::1]:443", nil, clients{}, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6", "[::ffff:10.1.2.3]:1", nil, clients{}, "10.1.2.3"},
		{"XFF from an untrusted peer is ignored", "203.0.113.9:1", []string{"198.51.100.1"}, trusting, "203.0.113.9"},
		{"XFF from no trusted list is ignored", "10.0.0.1:1", []string{"198.51.100.1"}, clients{}, "10.0.0.1"},
		{"behind a proxy", "10.0.0.1:1", []string{"198.51.100.1"}, trusting, "198.51.100.1"},
		{"behind two proxies", "10.0.0.1:1", []string{"198.51.100.1, 192.168.1.1"}, trusting, "198.51.100.1"},
		{"a forged hop in front is not believed", "10.0.0.1:1", []string{"1.1.1.1, 198.51.100.1"}, trusting, "198.51.100.1"},
		{"several headers: the last ones first", "10.0.0.1:1", []string{"1.1.1.1", "198.51.100.7"}, trusting, "198.51.100.7"},
		{"IPv6 client behind a proxy", "10.0.0.1:1", []string{"2001:db8:9:9::5"}, trusting, "2001:db8:9:9::/64"},
		{"only proxies: the peer", "10.0.0.1:1", []string{"10.2.2.2"}, trusting, "10.0.0.1"},
		{"malformed: the peer", "10.0.0.1:1", []string{"not-an-ip"}, trusting, "10.0.0.1"},
	}
	for _, tc := range cases {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tc.c.key(r); got != tc.want {
			t.Errorf("%s: key %q, want %q", tc.name, got, tc.want)
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}
