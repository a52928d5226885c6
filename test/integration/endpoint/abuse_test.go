package endpoint_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/apiserver/frontdoor"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// junkJWT is a JWT-shaped token that no one issued, unique for i, padded to about size bytes.
func junkJWT(i, size int) string { return testenv.JunkJWT(i, size) }

// call sends one GET from client with header pairs and returns the envelope's code.
func call(t testing.TB, client *http.Client, path string, header ...string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, endpointURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return callRequest(t, client, req)
}

// callRequest sends req from client and returns the envelope's code, checking the body
// against the seed's schemas.
func callRequest(t testing.TB, client *http.Client, req *http.Request) int {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
	}
	if strings.HasPrefix(req.URL.Path, ingest.PathPrefix) {
		validateIngestBody(t, body)
	} else {
		validateBody(t, body)
	}
	var code int
	if _, err := fmt.Sscanf(string(body), `{"code":%d`, &code); err != nil {
		if strings.HasPrefix(string(body), `{"data":`) {
			return apiserver.CodeSuccess
		}
		t.Fatalf("no code in %s", body)
	}
	return code
}

// A bearer token sent as a WebSocket subprotocol (which k8s.io/apiserver's authenticator would
// take) is refused without a TokenReview, even a valid one.
func TestWebSocketProtocolTokenIsRefused(t *testing.T) {
	owner := newSAUser(t, "users", "wendy")
	task := createTaskWithProgress(t, testutil.MakeTask("ws", "team-d").Owner(owner.name), entry("upload", 1, 2, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	protocol := "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(owner.token)) + ", x"
	client := clientFor(t)
	before := tokenReviews.Load()
	for name, header := range map[string][]string{
		"alone":                   {"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Protocol", protocol},
		"junk, 37 KB":             {"Sec-WebSocket-Protocol", "base64url.bearer.authorization.k8s.io." + strings.Repeat("A", 37<<10)},
		"beside a valid Bearer":   {"Authorization", "Bearer " + owner.token, "Sec-WebSocket-Protocol", protocol},
		"second of two headers":   {"Sec-WebSocket-Protocol", "chat", "Sec-WebSocket-Protocol", protocol},
		"prefix in another place": {"Sec-WebSocket-Protocol", "x, " + protocol},
	} {
		if code := call(t, client, path, header...); code != apiserver.CodeLoginRequired {
			t.Errorf("%s: code %d, want 401", name, code)
		}
	}
	if n := tokenReviews.Load() - before; n != 0 {
		t.Errorf("%d TokenReviews for tokens in the WebSocket subprotocol; want 0", n)
	}
	if code := call(t, client, path, "Authorization", "Bearer "+owner.token); code != apiserver.CodeSuccess {
		t.Errorf("the same token as Bearer: code %d", code)
	}
}

// A client over its budget of failed logins is answered 429 without a review for a token that
// cannot be checked here; a token the cache knows still works for it; and a new token whose
// signature the endpoint verified is never held to the address's budget, so a neighbour's junk
// (a NAT, a proxy, a node's pods) cannot lock a user out. (An endpoint of its own whose budget
// does not refill within the test.)
func TestFailedLoginBudget(t *testing.T) {
	ctx := context.Background()
	const burst = 20
	base := startEndpoint(t, func(o *apiserver.Options) { o.FailedLoginsPerSecond, o.FailedLoginBurst = 0.001, burst })
	owner := newSAUser(t, "users", "lara")
	task := createTaskWithProgress(t, testutil.MakeTask("budget", "team-d").Owner(owner.name), entry("upload", 3, 4, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	attacker := clientFrom(net.IPv4(127, 0, 2, 1))
	call := func(t *testing.T, client *http.Client, path string, header ...string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		return callRequest(t, client, req)
	}
	waitForKeys(t, base)
	if code := call(t, attacker, path, "Authorization", "Bearer "+owner.token); code != apiserver.CodeSuccess {
		t.Fatalf("a valid token before the flood: code %d", code)
	}

	before := tokenReviews.Load()
	codes := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup // at once: the budget holds for concurrent requests, and 429s come after a delay
	const junk = 60
	for i := range junk {
		wg.Go(func() {
			code := call(t, attacker, "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+junkJWT(i, 200))
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if reviews := tokenReviews.Load() - before; codes[apiserver.CodeTooMany] != junk-burst || codes[apiserver.CodeLoginRequired] != burst || reviews < burst || reviews > burst+5 {
		t.Errorf("%d junk tokens at once: codes %v, %d TokenReviews; want %d refused by review (a review retried at most a few times) and the rest 429 without one", junk, codes, reviews, burst)
	}
	before = tokenReviews.Load()
	if code := call(t, attacker, path, "Authorization", "Bearer "+owner.token); code != apiserver.CodeSuccess {
		t.Errorf("a cached valid token from the client over budget: code %d", code)
	}
	if n := tokenReviews.Load() - before; n != 0 {
		t.Errorf("%d TokenReviews for a cached token", n)
	}
	fresh, err := testenv.Token(ctx, adminCfg, "users", "lara")
	if err != nil {
		t.Fatal(err)
	}
	if code := call(t, attacker, path, "Authorization", "Bearer "+fresh); code != apiserver.CodeSuccess {
		t.Errorf("a new, verifiable token from the address over budget (its neighbour's junk): code %d, want 0", code)
	}
	if code := call(t, attacker, "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+junkJWT(999, 200)); code != apiserver.CodeTooMany {
		t.Errorf("more junk from the address over budget: code %d, want 429", code)
	}
}

// Only real reviews take a slot: with every slot held by a slow TokenReview, a token already
// reviewed is served at once, while a new token waits at most the review wait and gets 429.
func TestCachedTokenNeverWaitsForASlot(t *testing.T) {
	ctx := context.Background()
	owner := newSAUser(t, "users", "noor")
	task := createTaskWithProgress(t, testutil.MakeTask("slots", "team-d").Owner(owner.name), entry("upload", 1, 4, ""))
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	client := clientFor(t)
	if code := call(t, client, path, "Authorization", "Bearer "+owner.token); code != apiserver.CodeSuccess {
		t.Fatalf("code %d", code)
	}

	hold := make(chan struct{})
	holdReviews.Store(&hold)
	var wg sync.WaitGroup
	release := func() {
		if holdReviews.CompareAndSwap(&hold, nil) {
			close(hold)
		}
		wg.Wait()
	}
	defer release()
	slots := apiserver.NewOptions().MaxConcurrentReviews
	for i := range slots {
		wg.Add(1)
		go func() { // each from its own address, within its budget
			defer wg.Done()
			call(t, clientFrom(net.IPv4(127, 0, 3, byte(i+1))), "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+junkJWT(1000+i, 200))
		}()
	}
	gomega.NewWithT(t).Eventually(heldReviews.Load).Should(gomega.Equal(int64(slots)), "every slot held")

	for range 20 {
		if code := call(t, client, path, "Authorization", "Bearer "+owner.token); code != apiserver.CodeSuccess {
			t.Errorf("a cached token while every slot is held: code %d", code)
		}
	}
	fresh, err := testenv.Token(ctx, adminCfg, "users", "noor")
	if err != nil {
		t.Fatal(err)
	}
	// The 429 keeps the connection (the token's signature holds): the retry the answer asks
	// for comes on it, with no new TLS handshake.
	var conns []bool // per request: whether it came on a connection used before
	traced := func() *http.Request {
		req := bearerRequest(endpointURL+path, fresh)
		return req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { conns = append(conns, info.Reused) }}))
	}
	if code := callRequest(t, client, traced()); code != apiserver.CodeTooMany {
		t.Errorf("a new token while every slot is held: code %d, want 429", code)
	}
	if n := heldReviews.Load(); n != int64(slots) {
		t.Errorf("%d reviews held, want %d: the cached requests must not have waited for them", n, slots)
	}
	release()
	if code := callRequest(t, client, traced()); code != apiserver.CodeSuccess {
		t.Errorf("the new token once the slots are free: code %d", code)
	}
	if want := []bool{true, true}; !slices.Equal(conns, want) {
		t.Errorf("connections reused %v, want %v: the 429 for want of a slot closed the connection", conns, want)
	}
}

// 5,000 unique junk tokens of 15 KB, from many clients (each within its budget), all reviewed:
// the cache of refused tokens stays within its counted bound (hashes and reasons, never the
// tokens).
func TestJunkTokenFloodIsBounded(t *testing.T) {
	const n, size, perClient = 5000, 15 << 10, 10
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ip := net.IPv4(127, 4, byte(i/perClient/250), byte(i/perClient%250+1))
				call(t, clientFrom(ip), "/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+junkJWT(i, size))
			}
		}()
	}
	before := tokenReviews.Load()
	start := time.Now()
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	reviews := tokenReviews.Load() - before
	size4k := cacheBytes(t)
	t.Logf("%d junk tokens of %d KB in %s: %d TokenReviews; rejected-token cache %d bytes (bound %d)",
		n, size>>10, time.Since(start).Round(time.Millisecond), reviews, size4k, frontdoor.MaxRejectedTokenCacheBytes)
	if reviews < n/2 {
		t.Fatalf("only %d of %d junk tokens were reviewed: the flood did not reach the cache", reviews, n)
	}
	if size4k <= 0 || size4k > frontdoor.MaxRejectedTokenCacheBytes {
		t.Errorf("rejected-token cache holds %d bytes; want 0 < bytes <= %d", size4k, frontdoor.MaxRejectedTokenCacheBytes)
	}
}

// cacheBytes reads the endpoint's metric of its rejected-token cache.
func cacheBytes(t *testing.T) int {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == apiserver.RejectedTokenCacheBytesMetric {
			return int(metricValue(f.GetMetric()[0]))
		}
	}
	t.Fatalf("no metric %s", apiserver.RejectedTokenCacheBytesMetric)
	return 0
}

func metricValue(m *dto.Metric) float64 { return m.GetGauge().GetValue() }

// Connections are bounded per client address and in total, and accepting never waits: with
// every connection of one address held by a client that never sent a request, another address
// is served at once, and so is a newcomer from the same address (it takes the place of the
// oldest connection that never authenticated); an authenticated connection in use is kept.
func TestConnectionsAreBounded(t *testing.T) {
	const perAddress = 8
	base := startEndpoint(t, func(o *apiserver.Options) { o.MaxConnections, o.MaxConnectionsPerAddress = 3*perAddress, perAddress })
	owner := newSAUser(t, "users", "connie")
	task := createTaskWithProgress(t, testutil.MakeTask("conns", "team-d").Owner(owner.name), entry("upload", 1, 2, ""))
	path := base + "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)
	attackerIP := net.IPv4(127, 0, 9, 1)
	hold := func(n int) []net.Conn {
		var out []net.Conn
		for range n {
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: attackerIP}}).Dial("tcp", strings.TrimPrefix(base, "https://"))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
		return out
	}
	held := hold(4 * perAddress) // more than the address may hold, and more than the total
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	if code := callRequest(t, clientFrom(net.IPv4(127, 0, 9, 2)), bearerRequest(path, owner.token)); code != apiserver.CodeSuccess {
		t.Errorf("another address while one holds connections: code %d", code)
	}
	// The owner on the attacker's own address.
	ownerOnAttackerAddress := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: clientFrom(attackerIP).Transport.(*http.Transport).TLSClientConfig,
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: attackerIP}}).DialContext}}
	if code := callRequest(t, ownerOnAttackerAddress, bearerRequest(path, owner.token)); code != apiserver.CodeSuccess {
		t.Errorf("the owner on the attacker's address: code %d", code)
	}
	// Its connection, now authenticated and kept alive, outlives another wave of held ones.
	more := hold(2 * perAddress)
	defer func() {
		for _, c := range more {
			c.Close()
		}
	}()
	reused := false
	req := bearerRequest(path, owner.token)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}))
	if code := callRequest(t, ownerOnAttackerAddress, req); code != apiserver.CodeSuccess || !reused {
		t.Errorf("the owner's kept-alive connection after another wave: code %d, reused %t (want its idle authenticated connection kept while unauthenticated ones remained)", code, reused)
	}
	// The held connections were closed by the endpoint (evicted or refused): reading gives EOF.
	closed := 0
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closed++
		}
	}
	if closed < len(held)-perAddress {
		t.Errorf("%d of %d held connections closed by the endpoint; want at least %d", closed, len(held), len(held)-perAddress)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitForKeys waits until the endpoint at base has read the service-account issuer's keys: a
// forged token of that issuer is then refused without a review.
func waitForKeys(t testing.TB, base string) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func() int64 {
		before := tokenReviews.Load()
		req, _ := http.NewRequest(http.MethodGet, base+"/workflow/progress/AAAAAAAAAA", nil)
		req.Header.Set("Authorization", "Bearer "+forgedToken(t, "keys-probe"))
		if code := callRequest(t, clientFrom(net.IPv4(127, 0, 2, 250)), req); code != apiserver.CodeLoginRequired {
			t.Fatalf("a forged token: code %d", code)
		}
		return tokenReviews.Load() - before
	}).Should(gomega.BeZero(), "the endpoint has the issuer's keys")
}
