package apiserver

import (
	"bytes"
	"container/list"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// The streaming form of GET /workflow/progress/{id}: with Accept: text/event-stream the same
// body is sent as a server-sent event at once and again on every change of it (announced by the
// informer, no polling), with a heartbeat comment in between. The caller is authenticated and
// authorized as for the plain GET, and again every reauth interval: a token that stopped
// working ends the stream, a permission that went away turns the body into the empty one.
// A stranger's stream and an unknown ID's are byte for byte alike: one empty body, then
// heartbeats.

// streamRetry suggests the reconnection delay (SSE retry field, milliseconds).
const streamRetry = "retry: 3000\n\n"

// wantsStream: a GET whose Accept header names the media type text/event-stream (exactly, among
// others, parameters aside).
func wantsStream(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, accept := range r.Header["Accept"] {
		for accept != "" {
			var mediaRange string
			mediaRange, accept, _ = strings.Cut(accept, ",")
			mediaType, _, _ := strings.Cut(mediaRange, ";")
			if strings.EqualFold(strings.TrimSpace(mediaType), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// idKey and nameKey are the changeHub keys of a task by ID and by namespace/name.
func idKey(id string) string                { return "id/" + id }
func nameKey(namespace, name string) string { return "name/" + namespace + "/" + name }

// taskChanged announces a change of task to the streams that follow it.
func (c *changeHub) taskChanged(t *workflowv1alpha1.WorkflowTask) {
	c.notify(idKey(workflowv1alpha1.TaskIDFromUID(t.UID)))
	c.notify(nameKey(t.Namespace, t.Name))
}

// changeHub tells the streams that follow a key of the key's changes. A key is held only while
// a stream subscribes to it, and a stream subscribes only to what its caller may see: the hub
// holds at most one key per open stream, so it is bounded by the stream slots.
type changeHub struct {
	mu      sync.Mutex
	waiters map[string]*waiter
}

// waiter is a key's channel, closed (and replaced) at each of its changes, and how many
// subscriptions hold the key.
type waiter struct {
	ch   chan struct{}
	refs int
}

func newChangeHub() *changeHub { return &changeHub{waiters: map[string]*waiter{}} }

// subscription is one stream's hold on a key.
type subscription struct {
	hub *changeHub
	key string
}

// subscribe holds key until the subscription is closed.
func (c *changeHub) subscribe(key string) *subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.waiters[key]
	if !ok {
		w = &waiter{ch: make(chan struct{})}
		c.waiters[key] = w
	}
	w.refs++
	return &subscription{hub: c, key: key}
}

// next is a channel closed at the key's next change. Take it before reading what changes, so
// that no change is missed.
func (s *subscription) next() <-chan struct{} {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.waiters[s.key].ch
}

// close lets go of the key; the last subscription's close removes it.
func (s *subscription) close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	w := s.hub.waiters[s.key]
	if w.refs--; w.refs == 0 {
		delete(s.hub.waiters, s.key)
	}
}

func (c *changeHub) notify(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.waiters[key]; ok {
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// size is the number of keys held.
func (c *changeHub) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// streamLimiter shares the stream slots max-min fairly: at most maxPerUser per user, and when
// all maxTotal are taken, a user with fewer streams than the user holding the most takes the
// slot of that user's oldest stream (which ends; its client reconnects). So a crowd of
// identities cannot keep a newcomer out, and a user below the fair share always gets a slot.
type streamLimiter struct {
	mu                   sync.Mutex
	total                int
	perUser              map[string]*list.List // of *streamSlot, oldest first
	maxTotal, maxPerUser int
}

// streamSlot is one open stream's slot; evicted is closed when another user takes it.
type streamSlot struct {
	user    string
	el      *list.Element
	evicted chan struct{}
}

func newStreamLimiter(maxTotal, maxPerUser int) *streamLimiter {
	return &streamLimiter{perUser: map[string]*list.List{}, maxTotal: maxTotal, maxPerUser: maxPerUser}
}

// acquire takes a slot for name; false when name is at its cap, or every slot is taken by users
// holding no more streams than name would.
func (l *streamLimiter) acquire(name string) (*streamSlot, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mine := l.perUser[name]
	held := 0
	if mine != nil {
		held = mine.Len()
	}
	if held >= l.maxPerUser {
		return nil, false
	}
	if l.total >= l.maxTotal {
		var richest *list.List
		for _, streams := range l.perUser {
			if richest == nil || streams.Len() > richest.Len() {
				richest = streams
			}
		}
		if richest == nil || richest.Len() <= held+1 { // name would hold as many: no fairer
			return nil, false
		}
		victim := richest.Front().Value.(*streamSlot)
		l.releaseLocked(victim)
		close(victim.evicted)
	}
	if mine = l.perUser[name]; mine == nil {
		mine = list.New()
		l.perUser[name] = mine
	}
	slot := &streamSlot{user: name, evicted: make(chan struct{})}
	slot.el = mine.PushBack(slot)
	l.total++
	return slot, true
}

// release gives a slot back (once; an evicted slot is already given back).
func (l *streamLimiter) release(s *streamSlot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(s)
}

func (l *streamLimiter) releaseLocked(s *streamSlot) {
	if s.el == nil {
		return
	}
	streams := l.perUser[s.user]
	streams.Remove(s.el)
	s.el = nil
	if streams.Len() == 0 {
		delete(l.perUser, s.user)
	}
	l.total--
}

// open is the number of open streams.
func (l *streamLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// stream serves the task's progress as server-sent events until the client leaves, the
// stream's lifetime ends, the caller's token stops working, its slot goes to a fairer user, or
// the server shuts down. credentials is a copy of the request as it arrived, to authenticate
// again. The stream subscribes to the task's changes only while its caller may see the task;
// otherwise it looks again at each re-authentication (and answers as for an unknown task).
func (h *handler) stream(w http.ResponseWriter, r, credentials *http.Request, cid string, u user.Info, t target) int {
	slot, ok := h.streams.acquire(u.GetName())
	if !ok {
		w.Header()["Retry-After"] = retryAfter1
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
		return CodeTooMany
	}
	defer h.streams.release(slot)
	ctx := r.Context()
	body, visible, code, err := h.progressFor(ctx, u, t)
	if code != CodeSuccess {
		return h.answerError(w, cid, code, err)
	}
	var sub *subscription
	var changed <-chan struct{} // nil (never ready) while not subscribed
	defer func() {
		if sub != nil {
			sub.close()
		}
	}()
	follow := func(visible bool) {
		switch {
		case visible && sub == nil:
			sub = h.changes.subscribe(t.key())
			changed = sub.next()
		case !visible && sub != nil:
			sub.close()
			sub, changed = nil, nil
		}
	}
	if visible { // subscribe, then read again: no change between the two reads is missed
		follow(true)
		if body, visible, code, err = h.progressFor(ctx, u, t); code != CodeSuccess {
			return h.answerError(w, cid, code, err)
		}
		follow(visible)
	}
	// The server's write timeout is for one answer: a stream lives its own lifetime and sets a
	// deadline for each write. (net/http lifts the read deadline itself once the request is
	// read, to notice the client leaving.)
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(parts ...[]byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(h.heartbeat + 10*time.Second))
		for _, p := range parts {
			if _, err := w.Write(p); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	event := func(b []byte) [][]byte { return [][]byte{[]byte("data: "), b, []byte("\n\n")} }
	if !send(append([][]byte{[]byte(streamRetry)}, event(body)...)...) {
		return CodeSuccess
	}
	last := body
	lifetime := time.NewTimer(h.lifetime)
	defer lifetime.Stop()
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	reauth := time.NewTicker(h.reauth)
	defer reauth.Stop()
	for {
		select {
		case <-ctx.Done(): // the client left
			return CodeSuccess
		case <-h.shutdown: // the server shuts down: end the stream, the client reconnects elsewhere
			return CodeSuccess
		case <-slot.evicted: // a user with fewer streams took the slot
			return CodeSuccess
		case <-lifetime.C: // the client reconnects (retry)
			return CodeSuccess
		case <-heartbeat.C:
			if !send([]byte(": heartbeat\n\n")) {
				return CodeSuccess
			}
			continue
		case <-reauth.C:
			if u, err = h.authn.Authenticate(w, credentials.Clone(ctx)); err != nil {
				return CodeSuccess // the token stopped working
			}
		case <-changed:
			changed = sub.next()
		}
		body, visible, code, _ := h.progressFor(ctx, u, t)
		if code != CodeSuccess { // a review slot was busy or the lookup failed: next time
			continue
		}
		follow(visible)
		if !bytes.Equal(body, last) {
			if !send(event(body)...) {
				return CodeSuccess
			}
			last = body
		}
	}
}

// closeStreams ends every stream (the server is shutting down).
func (h *handler) closeStreams() { h.shutdownOnce.Do(func() { close(h.shutdown) }) }
