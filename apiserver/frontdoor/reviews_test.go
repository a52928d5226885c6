package frontdoor

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// 5,000 refused tokens whose reasons are 50 KB each: the cache keeps at most its entries and
// its counted bytes, evicting the least recently used; entries expire after the TTL.
func TestRejectionCacheIsBounded(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	c := newRejectionCache(10*time.Second, clk)
	huge := strings.Repeat("r", 50<<10)
	for i := range 5000 {
		c.add(sha256.Sum256([]byte(fmt.Sprint(i))), huge)
		if c.Bytes() > MaxRejectedTokenCacheBytes || c.Len() > rejectedTokenCacheSize {
			t.Fatalf("after %d: %d bytes, %d entries; bounds %d, %d", i+1, c.Bytes(), c.Len(), MaxRejectedTokenCacheBytes, rejectedTokenCacheSize)
		}
	}
	if c.Len() != rejectedTokenCacheSize {
		t.Errorf("%d entries, want the most recent %d", c.Len(), rejectedTokenCacheSize)
	}
	if _, ok := c.get(sha256.Sum256([]byte("0"))); ok {
		t.Error("the oldest entry was not evicted")
	}
	reason, ok := c.get(sha256.Sum256([]byte("4999")))
	if !ok || len(reason) != maxRejectionReason {
		t.Errorf("newest entry: ok %t, reason of %d bytes (want cut to %d)", ok, len(reason), maxRejectionReason)
	}
	clk.SetTime(clk.Now().Add(10 * time.Second))
	if _, ok := c.get(sha256.Sum256([]byte("4999"))); ok {
		t.Error("an entry outlived its TTL")
	}
	if c.Len() != rejectedTokenCacheSize-1 {
		t.Errorf("the expired entry was not removed: %d entries", c.Len())
	}
}

// A cached refusal is answered without the token: nothing of the request is echoed.
func TestRejectedAnswerHoldsNoToken(t *testing.T) {
	req, _ := http.NewRequest(http.MethodPost, "https://api/apis/authentication.k8s.io/v1/tokenreviews", nil)
	resp, err := rejectedAnswer(req, "invalid bearer token")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.ContentLength > 200 {
		t.Errorf("answer: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}
}
