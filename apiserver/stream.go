package apiserver

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	toolscache "k8s.io/client-go/tools/cache"

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
	for _, accept := range r.Header.Values("Accept") {
		for _, mediaRange := range strings.Split(accept, ",") {
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

// eventHandler announces every added, updated and deleted task.
func (c *changeHub) eventHandler() toolscache.ResourceEventHandler {
	announce := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if t, ok := obj.(*workflowv1alpha1.WorkflowTask); ok {
			c.taskChanged(t)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{AddFunc: announce, DeleteFunc: announce,
		UpdateFunc: func(_, obj any) { announce(obj) }}
}

// changeHub hands out, per key, a channel closed at the key's next change.
type changeHub struct {
	mu      sync.Mutex
	waiters map[string]chan struct{}
}

func newChangeHub() *changeHub { return &changeHub{waiters: map[string]chan struct{}{}} }

// next returns a channel closed at key's next change.
func (c *changeHub) next(key string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.waiters[key]
	if !ok {
		ch = make(chan struct{})
		c.waiters[key] = ch
	}
	return ch
}

func (c *changeHub) notify(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.waiters[key]; ok {
		close(ch)
		delete(c.waiters, key)
	}
}

// streamLimiter bounds open streams in total and per user.
type streamLimiter struct {
	mu                   sync.Mutex
	total                int
	perUser              map[string]int
	maxTotal, maxPerUser int
}

func newStreamLimiter(maxTotal, maxPerUser int) *streamLimiter {
	return &streamLimiter{perUser: map[string]int{}, maxTotal: maxTotal, maxPerUser: maxPerUser}
}

// acquire takes a stream for name, and returns its release; false when over a bound.
func (l *streamLimiter) acquire(name string) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal || l.perUser[name] >= l.maxPerUser {
		return nil, false
	}
	l.total++
	l.perUser[name]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.perUser[name]--; l.perUser[name] == 0 {
			delete(l.perUser, name)
		}
	}, true
}

// stream serves the task's progress as server-sent events until the client leaves, the
// stream's lifetime ends, the caller's token stops working, or the server shuts down.
// credentials is a copy of the request as it arrived, to authenticate again.
func (h *handler) stream(w http.ResponseWriter, r, credentials *http.Request, cid string, u user.Info, find lookup, named *byName, key string) int {
	release, ok := h.streams.acquire(u.GetName())
	if !ok {
		writeError(w, CodeTooMany, MsgTooMany, cid, nil, h.debug)
		return CodeTooMany
	}
	defer release()
	ctx := r.Context()
	changed := h.changes.next(key) // before the first read: no change is missed
	body, code, err := h.progressFor(ctx, u, find, named)
	if code != CodeSuccess {
		return h.answerError(w, cid, code, err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(parts ...[]byte) bool {
		// the server's write timeout is for one answer; a stream sets it for each write
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
		case <-lifetime.C: // the client reconnects (retry)
			return CodeSuccess
		case <-heartbeat.C:
			if !send([]byte(": heartbeat\n\n")) {
				return CodeSuccess
			}
			continue
		case <-reauth.C:
			if u, err = h.authenticate(credentials.Clone(ctx)); err != nil {
				return CodeSuccess // the token stopped working
			}
		case <-changed:
			changed = h.changes.next(key)
		}
		body, code, _ := h.progressFor(ctx, u, find, named)
		if code != CodeSuccess { // a review slot was busy or the lookup failed: next time
			continue
		}
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
