package attack_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// BenchmarkAttack measures the owner of a task polling it through the progress endpoint under
// closed-loop load (ownerConns connections, each sending its next request as soon as the last
// is answered, as wrk does), alone and while each door is attacked — from another address and
// from the owner's own — and reports the owner's p50/p99 and throughput in each phase and the
// ratio of its p99 to its p99 alone. Beside the owner, on its address, four pods of a task push
// every 500 ms (within their budget) and the owner reads each push back: their push→visible
// p50/p99 in each phase. The attacks include the ingest path's: junk and forged tokens, and a
// pod flooding its own task far past its budget. The endpoint runs with the default options
// (the suite's small bounds are for the tests). Then the stream-leak attack (20,000 stream requests of
// unique 60,000-character IDs) with the live heap after GC against its baseline, and 2,048
// connections held from one address while another address is served.
//
//	go test -run '^$' -bench Attack -benchtime 1x -v ./test/attack   (make bench-attack)
func BenchmarkAttack(b *testing.B) {
	owner := newSAUser(b, "users", "bench-owner")
	path := createTask(b, "bench-attacked", owner)
	prometheus := newSAUser(b, "monitoring", "prometheus")
	const phase, ownerConns, attackConns, pushers = 4 * time.Second, 4, 200, 4
	ownerIP := net.IPv4(127, 6, 0, 1)
	ownerReq := func(c *http.Client) bool {
		return send(c, progressURL+path, "Authorization", "Bearer "+owner.token).code() == apiserver.CodeSuccess
	}
	// The pusher victims: pods of a task pushing from the owner's address, each within its
	// budget (every 500 ms), each push then read back by the owner.
	pushed := createTaskObject(b, "bench-pushed", owner)
	var pods []pod
	for i := range pushers {
		pods = append(pods, runningPod(b, pushed, fmt.Sprintf("bench-pushed-%d", i)))
	}
	flooder := runningPod(b, pushed, "bench-pushed-flooder")
	ingestURL := progressURL + ingest.Path(pushed.Namespace, pushed.Name)
	hostile := pushBody(pushed.UID, "upload", 666)
	attacks := []struct {
		name string
		run  func(ctx context.Context, res *floodResult)
	}{
		{"progress-junk-1addr", floodFrom(progressURL+"/workflow/progress/AAAAAAAAAA", attackConns, 1, nil, junkHeader)},
		{"progress-junk-200addr", floodFrom(progressURL+"/workflow/progress/AAAAAAAAAA", attackConns, 200, nil, junkHeader)},
		{"progress-junk-owner-address", floodFrom(progressURL+"/workflow/progress/AAAAAAAAAA", attackConns, 1, ownerIP, junkHeader)},
		{"progress-forged-owner-address", floodFrom(progressURL+"/workflow/progress/AAAAAAAAAA", attackConns, 1, ownerIP,
			func(int) []string { return []string{"Authorization", "Bearer " + forgedToken(b)} })},
		{"progress-none-owner-address", floodFrom(progressURL+"/workflow/progress/AAAAAAAAAA", attackConns, 1, ownerIP, func(int) []string { return nil })},
		{"metrics-junk-owner-address", floodFrom(metricsURL+"/metrics", attackConns, 1, ownerIP, junkHeader)},
		{"metrics-scrape-owner-address", floodFrom(metricsURL+"/metrics", 8, 1, ownerIP,
			func(int) []string { return []string{"Authorization", "Bearer " + prometheus.token} })},
		{"probes-owner-address", floodFrom(probesURL+"/readyz", attackConns, 1, ownerIP, func(int) []string { return nil })},
		{"held-connections-owner-address", holdFrom(progressURL, 2048, ownerIP)},
		{"ingest-junk-owner-address", floodRequestsFrom(http.MethodPut, ingestURL, hostile, attackConns, 1, ownerIP, junkHeader)},
		{"ingest-forged-owner-address", floodRequestsFrom(http.MethodPut, ingestURL, hostile, attackConns, 1, ownerIP,
			func(int) []string { return bearer(forgedToken(b)) })},
		{"ingest-pod-flood-owner-address", floodRequestsFrom(http.MethodPut, ingestURL, pushBody(pushed.UID, "flood", 1), attackConns, 1, ownerIP,
			func(int) []string { return bearer(flooder.token) })},
	}
	// measure runs the owner's closed loop and the pushers side by side for a phase.
	measure := func() (load, load) {
		var push load
		done := make(chan struct{})
		go func() { defer close(done); push = pushVisible(b, ownerIP, pods, owner, readPath(pushed), phase) }()
		read := closedLoop(b, ownerIP, ownerConns, phase, ownerReq)
		<-done
		return read, push
	}
	for b.Loop() {
		alone, pushAlone := measure()
		reportLoad(b, "alone", alone, nil)
		reportPush(b, "alone", pushAlone)
		for _, a := range attacks {
			ctx, cancel := context.WithCancel(context.Background())
			var res floodResult
			done := make(chan struct{})
			go func() { defer close(done); a.run(ctx, &res) }()
			time.Sleep(time.Second) // the attack under way
			under, push := measure()
			cancel()
			<-done
			reportLoad(b, a.name, under, &res)
			reportPush(b, a.name, push)
			b.ReportMetric(float64(pct(under.latencies, 99))/float64(pct(alone.latencies, 99)), a.name+"-p99-ratio")
			b.ReportMetric(float64(pct(push.latencies, 99))/float64(pct(pushAlone.latencies, 99)), a.name+"-push-p99-ratio")
		}
		streamLeak(b, owner)
		heldConnections(b, owner, path)
	}
}

// load is what a closed-loop client measured.
type load struct {
	latencies []time.Duration // sorted
	failed    int
	elapsed   time.Duration
}

// closedLoop runs conns connections from ip, each sending its next request as soon as the last
// is answered, for d.
func closedLoop(b testing.TB, ip net.IP, conns int, d time.Duration, req func(*http.Client) bool) load {
	b.Helper()
	var mu sync.Mutex
	var out load
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range conns {
		c := sameAddressClient(ip)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			var mine []time.Duration
			failed := 0
			for time.Now().Before(deadline) {
				start := time.Now()
				if !req(c) {
					failed++
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			out.latencies = append(out.latencies, mine...)
			out.failed += failed
			mu.Unlock()
		})
	}
	wg.Wait()
	out.elapsed = d
	slices.Sort(out.latencies)
	return out
}

// floodResult counts an attack's requests and answers.
type floodResult struct{ sent, answered atomic.Int64 }

var benchJunk atomic.Int64

func junkHeader(int) []string {
	return []string{"Authorization", "Bearer " + junkJWT(int(benchJunk.Add(1))+1e7, 300)}
}

// floodFrom is an attack: conns connections spread over addrs addresses (or all from ip),
// each sending GETs made by header as fast as it is answered.
func floodFrom(url string, conns, addrs int, ip net.IP, header func(int) []string) func(context.Context, *floodResult) {
	return floodRequestsFrom(http.MethodGet, url, nil, conns, addrs, ip, header)
}

// floodRequestsFrom is floodFrom with requests of method carrying body.
func floodRequestsFrom(method, url string, body []byte, conns, addrs int, ip net.IP, header func(int) []string) func(context.Context, *floodResult) {
	return func(ctx context.Context, res *floodResult) {
		var wg sync.WaitGroup
		var seq atomic.Int64
		for i := range conns {
			from := ip
			if from == nil {
				from = net.IPv4(127, 7, byte(i%addrs/250), byte(i%addrs%250+1))
			}
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxConnsPerHost: 1, //nolint:gosec // self-signed test endpoint
				DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}).DialContext}
			client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			wg.Go(func() {
				defer tr.CloseIdleConnections()
				for ctx.Err() == nil {
					var rd io.Reader
					if body != nil {
						rd = bytes.NewReader(body)
					}
					req, _ := http.NewRequestWithContext(ctx, method, url, rd)
					h := header(int(seq.Add(1)))
					for j := 0; j+1 < len(h); j += 2 {
						req.Header.Add(h[j], h[j+1])
					}
					res.sent.Add(1)
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					res.answered.Add(1)
				}
			})
		}
		wg.Wait()
	}
}

// holdFrom is an attack: n connections from ip that send nothing, re-opened as the listener
// closes them.
func holdFrom(base string, n int, ip net.IP) func(context.Context, *floodResult) {
	return func(ctx context.Context, res *floodResult) {
		host := base[len("https://"):]
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for ctx.Err() == nil {
					c, err := d.DialContext(ctx, "tcp", host)
					if err != nil {
						return
					}
					res.sent.Add(1)
					go func() { <-ctx.Done(); c.Close() }()
					_, _ = c.Read(make([]byte, 1)) // until the listener closes it
					c.Close()
				}
			})
		}
		wg.Wait()
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func reportLoad(b *testing.B, name string, l load, res *floodResult) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rps := float64(len(l.latencies)) / l.elapsed.Seconds()
	b.ReportMetric(ms(pct(l.latencies, 50)), name+"-p50-ms")
	b.ReportMetric(ms(pct(l.latencies, 99)), name+"-p99-ms")
	b.ReportMetric(rps, name+"-req/s")
	attack := ""
	if res != nil {
		attack = fmt.Sprintf("; attacker sent %d, answered %d", res.sent.Load(), res.answered.Load())
	}
	b.Logf("%-32s owner p50 %6.2f ms  p99 %7.2f ms  %7.0f req/s  failed %d%s", name, ms(pct(l.latencies, 50)), ms(pct(l.latencies, 99)), rps, l.failed, attack)
}

// pushVisible makes each of pods push a new value of its own entry every 500 ms (within its
// budget) from ip for d, and the owner read the task right after each push; a push's latency is
// from sending it to the owner's answer showing its value (failed: refused, or not shown).
func pushVisible(b testing.TB, ip net.IP, pods []pod, owner saUser, path string, d time.Duration) load {
	var mu sync.Mutex
	var out load
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for i, p := range pods {
		pusher, reader := sameAddressClient(ip), sameAddressClient(ip)
		typ := fmt.Sprintf("pushed_%d", i)
		wg.Go(func() {
			defer pusher.CloseIdleConnections()
			defer reader.CloseIdleConnections()
			var mine []time.Duration
			failed := 0
			for v := time.Now().UnixNano(); time.Now().Before(deadline); v++ {
				start := time.Now()
				ok := p.push(pusher, typ, v, "").code() == apiserver.CodeSuccess
				if ok {
					a := send(reader, progressURL+path, "Authorization", "Bearer "+owner.token)
					var got struct {
						Data map[string]struct{ Current int64 } `json:"data"`
					}
					ok = a.code() == apiserver.CodeSuccess && json.Unmarshal(a.body, &got) == nil && got.Data[typ].Current == v
				}
				took := time.Since(start)
				mine = append(mine, took)
				if !ok {
					failed++
				}
				time.Sleep(500*time.Millisecond - took)
			}
			mu.Lock()
			out.latencies = append(out.latencies, mine...)
			out.failed += failed
			mu.Unlock()
		})
	}
	wg.Wait()
	out.elapsed = d
	slices.Sort(out.latencies)
	return out
}

func reportPush(b *testing.B, name string, l load) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(l.latencies, 50)), name+"-push-visible-p50-ms")
	b.ReportMetric(ms(pct(l.latencies, 99)), name+"-push-visible-p99-ms")
	b.ReportMetric(float64(l.failed), name+"-push-failed")
	b.Logf("%-32s pusher push→visible p50 %6.2f ms  p99 %7.2f ms  %d pushes, failed %d", name, ms(pct(l.latencies, 50)), ms(pct(l.latencies, 99)), len(l.latencies), l.failed)
}

// streamLeak sends 20,000 stream requests of unique 60,000-character IDs as one authenticated
// user, and reports the live heap after GC and the change hub against their baselines.
func streamLeak(b *testing.B, u saUser) {
	const n = 20000
	client := sameAddressClient(freshAddress())
	closeIdle()
	baseHeap, baseHub := liveHeap(), metric(b, apiserver.StreamWaitersMetric)
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		for _, a := range flood(client, progressURL+"/workflow/progress/"+randomID(60000), 1000, 8, func(int) []string {
			return []string{"Authorization", "Bearer " + u.token, "Accept", "text/event-stream"}
		}) {
			if a.code() != apiserver.CodeParamErr {
				b.Fatalf("a malformed ID: HTTP %d %.100s (%v)", a.status, a.body, a.err)
			}
		}
	}
	closeIdle()
	heap, hub := liveHeap(), metric(b, apiserver.StreamWaitersMetric)
	b.ReportMetric(float64(int64(heap)-int64(baseHeap))/(1<<20), "stream-leak-live-heap-delta-MiB")
	b.ReportMetric(hub-baseHub, "stream-leak-hub-delta")
	b.Logf("stream leak: %d requests of 60,000-character IDs in %s: live heap %d → %d MiB, change hub %v → %v",
		n, time.Since(start).Round(time.Millisecond), baseHeap>>20, heap>>20, baseHub, hub)
}

// heldConnections holds 2,048 connections from one address and reports whether another address
// is served meanwhile, and in how long.
func heldConnections(b *testing.B, owner saUser, path string) {
	const n = 2048
	ctx, cancel := context.WithCancel(context.Background())
	var res floodResult
	done := make(chan struct{})
	go func() { defer close(done); holdFrom(progressURL, n, freshAddress())(ctx, &res) }()
	time.Sleep(2 * time.Second)
	start := time.Now()
	a := send(sameAddressClient(freshAddress()), progressURL+path, "Authorization", "Bearer "+owner.token)
	took := time.Since(start)
	cancel()
	<-done
	served := 0.0
	if a.code() == apiserver.CodeSuccess {
		served = 1
	}
	b.ReportMetric(served, "held-2048-other-address-served")
	b.Logf("2,048 connections held from one address (%d opened in all): another address served %t in %s", res.sent.Load(), served == 1, took.Round(time.Microsecond))
}
