package attack_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/apiserver"
)

// streamRequest opens an event stream of path with token from client; the caller closes the
// body.
func streamRequest(t *testing.T, client *http.Client, path, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, progressURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// firstEvent reads a stream up to its first data line.
func firstEvent(t *testing.T, resp *http.Response) string {
	t.Helper()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			return data
		}
	}
	t.Fatalf("the stream ended before its first event: %v", sc.Err())
	return ""
}

func randomID(n int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// An authenticated caller asking for event streams of unique, long, malformed IDs leaves
// nothing behind (each is answered 40001 and nothing is registered for its key); streams of
// unique well-formed unknown IDs hold nothing either, while open and after: the change hub stays
// at its baseline, the open streams and goroutines return to theirs, and the live heap after GC
// stays within 10 MiB of its baseline.
func TestStreamsLeaveNothingBehind(t *testing.T) {
	const malformed, unknown = 3000, 200
	user := newSAUser(t, "users", "streamer")
	client := clientFrom(freshAddress())
	if a := send(client, progressURL+"/workflow/progress/AAAAAAAAAA", "Authorization", "Bearer "+user.token); a.code() != apiserver.CodeSuccess {
		t.Fatalf("warm-up: %d %s", a.status, a.body)
	}
	hub := func() float64 { return metric(t, apiserver.StreamWaitersMetric) }
	baseHub, baseStreams := hub(), metric(t, apiserver.StreamsMetric)
	closeIdle()
	baseGoroutines, baseHeap := runtime.NumGoroutine(), liveHeap()

	for i := 0; i < malformed; i += 100 {
		got := flood(client, progressURL+"/workflow/progress/"+randomID(60000), 100, 8, func(int) []string {
			return []string{"Authorization", "Bearer " + user.token, "Accept", "text/event-stream"}
		})
		for _, a := range got {
			if a.code() != apiserver.CodeParamErr {
				t.Fatalf("a malformed 60,000-character ID: HTTP %d %.100s (%v), want code %d", a.status, a.body, a.err, apiserver.CodeParamErr)
			}
		}
		if h := hub(); h != baseHub {
			t.Fatalf("after %d malformed stream requests the change hub holds %v keys (baseline %v)", i+100, h, baseHub)
		}
	}
	for range unknown {
		resp := streamRequest(t, client, "/workflow/progress/"+randomID(10), user.token)
		if data := firstEvent(t, resp); data != `{"data":{},"code":0,"msg":""}` {
			t.Fatalf("an unknown ID's stream: %s", data)
		}
		if h := hub(); h != baseHub {
			t.Fatalf("an open stream of an unknown ID holds a key: hub %v (baseline %v)", h, baseHub)
		}
		resp.Body.Close()
	}
	gomega.NewWithT(t).Eventually(func() float64 { return metric(t, apiserver.StreamsMetric) }).Should(gomega.Equal(baseStreams), "open streams back to the baseline")
	closeIdle()
	settled(t, baseGoroutines, 20)
	if heap := liveHeap(); heap > baseHeap+10<<20 {
		t.Errorf("live heap %d MiB after the attack, baseline %d MiB: more than 10 MiB left behind", heap>>20, baseHeap>>20)
	}
}

// The stream slots are shared max-min fairly: with every slot taken by two identities, a third
// identity still gets one (the oldest stream of the identity holding the most ends), a user at
// its own cap does not, and a user holding as many as the richest cannot take one from it.
func TestStreamSlotsAreFair(t *testing.T) {
	owner := newSAUser(t, "users", "fair-owner")
	path := createTask(t, "fair", owner)
	hogs := []saUser{newSAUser(t, "users", "hog-1"), newSAUser(t, "users", "hog-2")}
	client := clientFrom(freshAddress())
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for _, hog := range hogs {
		for range opts.MaxStreamsPerUser {
			resp := streamRequest(t, client, path, hog.token) //nolint:bodyclose // closed with the others, deferred above
			firstEvent(t, resp)
			open = append(open, resp) //nolint:bodyclose // as above
		}
	}
	if n := metric(t, apiserver.StreamsMetric); n != float64(opts.MaxStreams) {
		t.Fatalf("%v streams open, want every slot (%d) taken", n, opts.MaxStreams)
	}
	over := streamRequest(t, client, path, hogs[0].token)
	body, _ := io.ReadAll(over.Body)
	over.Body.Close()
	if !strings.Contains(string(body), fmt.Sprintf(`"code":%d`, apiserver.CodeTooMany)) {
		t.Errorf("a user at its cap got another stream: %s", body)
	}
	newcomer := streamRequest(t, client, path, owner.token)
	defer newcomer.Body.Close()
	if data := firstEvent(t, newcomer); !strings.Contains(data, `"upload"`) {
		t.Errorf("the newcomer's stream: %s", data)
	}
	// The oldest stream of a hog ended for it.
	ended := 0
	for _, r := range open {
		if _, err := io.ReadAll(io.LimitReader(r.Body, 1<<20)); err == nil {
			ended++
			break
		}
	}
	if ended != 1 {
		t.Errorf("no hog's stream ended for the newcomer")
	}
}

// A stream lives its documented lifetime, past the server's read timeout: it keeps sending
// heartbeats until then.
func TestStreamOutlivesTheReadTimeout(t *testing.T) {
	owner := newSAUser(t, "users", "long-stream")
	path := createTask(t, "long-stream", owner)
	resp := streamRequest(t, clientFrom(freshAddress()), path, owner.token) //nolint:bodyclose // deferred next line
	defer resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*opts.StreamLifetime)
	defer cancel()
	go func() { <-ctx.Done(); resp.Body.Close() }()
	heartbeats := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == ": heartbeat" {
			heartbeats++
		}
	}
	atReadTimeout := int(opts.Timeouts.Read / opts.StreamHeartbeat)
	if want := int(opts.StreamLifetime/opts.StreamHeartbeat) * 3 / 4; heartbeats < want {
		t.Errorf("%d heartbeats before the stream ended; want at least %d (its lifetime %s), not the %d of the read timeout %s",
			heartbeats, want, opts.StreamLifetime, atReadTimeout, opts.Timeouts.Read)
	}
	if ctx.Err() != nil {
		t.Errorf("the stream outlived twice its lifetime")
	}
}

// New tokens are budgeted per identity: a user minting tokens in a loop gets 429 after the
// burst, with no review for them; its tokens already accepted keep working, and another
// identity is served.
func TestNewTokensAreBudgetedPerIdentity(t *testing.T) {
	minter := newSAUser(t, "users", "minter")
	path := createTask(t, "minted", minter)
	client := clientFrom(freshAddress())
	accepted, tooMany := 0, 0
	var first string
	before := tokenReviews.Load()
	for range opts.NewTokenBurst + 5 {
		token := minter.freshToken(t)
		switch a := send(client, progressURL+path, "Authorization", "Bearer "+token); a.code() {
		case apiserver.CodeSuccess:
			accepted++
			if first == "" {
				first = token
			}
		case apiserver.CodeTooMany:
			tooMany++
		default:
			t.Fatalf("a fresh token: HTTP %d %s", a.status, a.body)
		}
	}
	reviews := tokenReviews.Load() - before
	if accepted > opts.NewTokenBurst+1 || tooMany < 4 || reviews > int64(opts.NewTokenBurst)+2 {
		t.Errorf("%d fresh tokens: %d accepted, %d answered 429, %d TokenReviews; want at most the burst (%d) accepted and reviewed",
			opts.NewTokenBurst+5, accepted, tooMany, reviews, opts.NewTokenBurst)
	}
	if a := send(client, progressURL+path, "Authorization", "Bearer "+first); a.code() != apiserver.CodeSuccess {
		t.Errorf("a token accepted before the budget ran out: code %d", a.code())
	}
	other := newSAUser(t, "users", "not-a-minter")
	otherPath := createTask(t, "not-minted", other)
	if a := send(client, progressURL+otherPath, "Authorization", "Bearer "+other.freshToken(t)); a.code() != apiserver.CodeSuccess {
		t.Errorf("another identity's new token: code %d", a.code())
	}
}
