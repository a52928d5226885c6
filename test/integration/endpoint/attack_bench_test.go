package endpoint_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// BenchmarkAttack is the attack on the endpoint found on make run's cluster, on loopback and
// bounded in time: the owner polls its task with a token already reviewed, first alone, then
// while 200 connections send unique JWT-shaped junk tokens as fast as they can — from one
// address, and from 200 addresses (each with its own budget of failed logins). It reports the
// owner's p50/p99 in each phase, their ratio, the aggregated path's p99 under attack (a GET
// through kube-apiserver, as `kubectl get --raw` does), and what the attackers got.
//
//	go test -run '^$' -bench Attack -benchtime 1x ./test/integration/endpoint   (make bench-attack)
func BenchmarkAttack(b *testing.B) {
	owner := newSAUser(b, "users", "attacked-owner")
	task := createTaskWithProgress(b, testutil.MakeTask("attacked", "bench").Owner(owner.name), entry("upload", 1, 2, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	ownerClient := clientFrom(net.IPv4(127, 0, 6, 1))
	aggregated := kubernetes.NewForConfigOrDie(adminCfg).RESTClient()
	aggPath := "/apis/progress.taskops.dev/v1alpha1/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	ownerReq := func() time.Duration {
		start := time.Now()
		if code := callRequest(b, ownerClient, bearerRequest(endpointURL+path, owner.token)); code != 0 {
			b.Fatalf("owner: code %d", code)
		}
		return time.Since(start)
	}
	aggReq := func() time.Duration {
		start := time.Now()
		if err := aggregated.Get().AbsPath(aggPath).Do(context.Background()).Error(); err != nil {
			b.Fatalf("aggregated: %v", err)
		}
		return time.Since(start)
	}
	const every, phase = 5 * time.Millisecond, 4 * time.Second
	for range 50 { // warm: the token reviewed and cached, connections open
		ownerReq()
		aggReq()
	}

	for b.Loop() {
		alone := measure(every, phase, ownerReq)
		aggAlone := measure(4*every, phase/2, aggReq)
		report(b, "alone", alone, aggAlone, &attackResult{})
		for _, addrs := range []int{1, 200} {
			var res attackResult
			stop := attack(b, 200, addrs, &res)
			under := measure(every, phase, ownerReq)
			aggUnder := measure(4*every, phase/2, aggReq)
			stop()
			name := fmt.Sprintf("attack-%daddr", addrs)
			report(b, name, under, aggUnder, &res)
			b.ReportMetric(float64(pct(under, 99))/float64(pct(alone, 99)), name+"-owner-p99-ratio")
		}
	}
}

type attackResult struct{ sent, tooMany, loginRequired atomic.Int64 }

// attack starts conns connections (spread over addrs client addresses) that send unique junk
// JWTs until stop is called.
func attack(b *testing.B, conns, addrs int, res *attackResult) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var seq atomic.Int64
	for i := range conns {
		ip := net.IPv4(127, 7, byte(i%addrs/250), byte(i%addrs%250+1))
		tr := &http.Transport{TLSClientConfig: clientFrom(ip).Transport.(*http.Transport).TLSClientConfig, MaxConnsPerHost: 1,
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpointURL+"/workflow/progress/AAAAAAAAAA", nil)
				req.Header.Set("Authorization", "Bearer "+junkJWT(int(seq.Add(1))+1e6, 300))
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				res.sent.Add(1)
				switch {
				case len(body) > 10 && string(body[:11]) == `{"code":429`:
					res.tooMany.Add(1)
				case len(body) > 10 && string(body[:11]) == `{"code":401`:
					res.loginRequired.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second) // the flood under way
	return func() { cancel(); wg.Wait() }
}

// measure runs f every interval for d and returns the latencies, sorted.
func measure(interval, d time.Duration, f func() time.Duration) []time.Duration {
	var out []time.Duration
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(interval) {
		out = append(out, f())
	}
	slices.Sort(out)
	return out
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func report(b *testing.B, phase string, owner, agg []time.Duration, res *attackResult) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(owner, 50)), phase+"-owner-p50-ms")
	b.ReportMetric(ms(pct(owner, 99)), phase+"-owner-p99-ms")
	b.ReportMetric(ms(pct(agg, 99)), phase+"-aggregated-p99-ms")
	if n := res.sent.Load(); n > 0 {
		b.ReportMetric(float64(n), phase+"-junk-requests")
		b.ReportMetric(float64(res.tooMany.Load())/float64(n)*100, phase+"-junk-429-%")
	}
	b.Logf("%s: owner p50 %.2f ms p99 %.2f ms (%d polls); aggregated p99 %.2f ms; junk sent %d (401 %d, 429 %d)",
		phase, ms(pct(owner, 50)), ms(pct(owner, 99)), len(owner), ms(pct(agg, 99)), res.sent.Load(), res.loginRequired.Load(), res.tooMany.Load())
}
