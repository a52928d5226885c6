package scale_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// stormWriter is what a storm's writers are, in either mode: the reporter library writing the
// status (direct), or a pod pushing to the operator's endpoint (ingest).
type stormWriter interface {
	Set(typ string, current, total int64)
	// Flush writes or pushes the current state now.
	Flush(ctx context.Context) error
	// Close makes the last write (a push marked final) and stops.
	Close(ctx context.Context) error
	Stats() progress.Stats
}

var _ stormWriter = (*progress.Reporter)(nil)

// pusher is a pod's writer in ingest mode, speaking the wire protocol of pkg/progress/ingest
// over a connection of its own, as a pod would: it keeps its entries and PUTs its whole state
// to the task's push URL at most once per interval when something changed (the reporter's
// rhythm), at Flush, and marked final at Close; a 429 waits its Retry-After, another failure
// a second, and then the latest state is sent.
type pusher struct {
	url, token string
	uid        types.UID
	client     *http.Client
	interval   time.Duration

	mu      sync.Mutex
	entries map[string]pushedEntry
	version uint64

	kick    chan struct{}
	flushes chan chan error
	stop    chan struct{}
	done    chan struct{}

	ok, throttled, failed, bytes atomic.Int64
}

type pushedEntry struct {
	current, total int64
	at             time.Time
}

func newPusher(url, token string, uid types.UID, tlsConfig *tls.Config, interval time.Duration) *pusher {
	p := &pusher{url: url, token: token, uid: uid, interval: interval,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: tlsConfig.Clone(), MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}},
		entries: map[string]pushedEntry{}, kick: make(chan struct{}, 1), flushes: make(chan chan error),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *pusher) Set(typ string, current, total int64) {
	p.mu.Lock()
	p.entries[typ] = pushedEntry{current: current, total: total, at: time.Now()}
	p.version++
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *pusher) Stats() progress.Stats {
	return progress.Stats{OK: p.ok.Load(), Throttled: p.throttled.Load(), Error: p.failed.Load(), Bytes: p.bytes.Load()}
}

// loop pushes each change, at most once per interval, and at once when asked (Flush).
func (p *pusher) loop() {
	defer close(p.done)
	var (
		sent   uint64
		next   time.Time        // no push before, but a Flush
		timerC <-chan time.Time // armed: a push is due at next
	)
	pushNow := func() error {
		v, retryAfter, err := p.push(context.Background(), false)
		if err != nil {
			next = time.Now().Add(retryAfter)
			return err
		}
		sent, next = max(sent, v), time.Now().Add(p.interval)
		return nil
	}
	changed := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.version != sent
	}
	for {
		select {
		case <-p.stop:
			return
		case ch := <-p.flushes:
			ch <- pushNow()
		case <-p.kick:
		case <-timerC:
			timerC = nil
		}
		if timerC != nil || !changed() {
			continue
		}
		if time.Now().Before(next) {
			timerC = time.After(time.Until(next))
			continue
		}
		_ = pushNow()
		if changed() {
			timerC = time.After(time.Until(next))
		}
	}
}

func (p *pusher) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	select {
	case p.flushes <- ch:
	case <-p.done:
		return errors.New("closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the loop and pushes the last state, marked final, until it is taken or ctx ends.
func (p *pusher) Close(ctx context.Context) error {
	close(p.stop)
	<-p.done
	for {
		_, retryAfter, err := p.push(ctx, true)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last push: %w)", ctx.Err(), err)
		case <-time.After(retryAfter):
		}
	}
}

var errThrottled = errors.New("429")

// push PUTs the whole state; on failure it says when to try again.
func (p *pusher) push(ctx context.Context, final bool) (uint64, time.Duration, error) {
	p.mu.Lock()
	v := p.version
	body := ingest.Push{TaskUID: p.uid, Final: final, Entries: make([]workflowv1alpha1.ProgressEntry, 0, len(p.entries))}
	for typ, e := range p.entries {
		at := metav1.NewMicroTime(e.at)
		body.Entries = append(body.Entries, workflowv1alpha1.ProgressEntry{Type: typ, Current: e.current, Total: e.total, UpdateTime: &at})
	}
	p.mu.Unlock()
	sort.Slice(body.Entries, func(i, j int) bool { return body.Entries[i].Type < body.Entries[j].Type })
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, time.Second, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.url, bytes.NewReader(raw))
	if err != nil {
		return 0, time.Second, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	p.bytes.Add(int64(len(raw)))
	resp, err := p.client.Do(req)
	if err != nil {
		p.failed.Add(1)
		return 0, time.Second, err
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		p.failed.Add(1)
		return 0, time.Second, err
	}
	var envelope struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(answer, &envelope); err != nil || resp.StatusCode != http.StatusOK {
		p.failed.Add(1)
		return 0, time.Second, fmt.Errorf("push: HTTP %d: %s", resp.StatusCode, answer)
	}
	switch envelope.Code {
	case 0:
		p.ok.Add(1)
		return v, 0, nil
	case http.StatusTooManyRequests:
		p.throttled.Add(1)
		wait := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return 0, wait, fmt.Errorf("%w: %s", errThrottled, envelope.Msg)
	default:
		p.failed.Add(1)
		return 0, time.Second, fmt.Errorf("push: code %d: %s", envelope.Code, answer)
	}
}
