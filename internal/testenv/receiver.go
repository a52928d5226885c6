package testenv

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// Behaviours of an EventReceiver.
const (
	// Accept decodes each request as a CloudEvent with the SDK and answers 200 (400 when it is
	// not one).
	Accept = "accept"
	// Drop closes the connection without an answer: a sink that is down.
	Drop = "drop"
	// Fail answers 503.
	Fail = "fail"
	// Reject answers 400 to everything.
	Reject = "reject"
	// Hang never answers (until the test ends or the sender gives up).
	Hang = "hang"
	// Redirect answers 302 to RedirectTo.
	Redirect = "redirect"
)

// ReceivedEvent is a CloudEvent an EventReceiver accepted, with the request as it came.
type ReceivedEvent struct {
	Event  cloudevents.Event
	Header http.Header
	Body   []byte
	// At is when it arrived.
	At time.Time
}

// EventReceiver is a CloudEvents HTTP sink for tests: a real server that decodes what it is
// sent with the CloudEvents SDK and behaves as told (SetBehaviour), counting attempts and the
// requests it holds at once.
type EventReceiver struct {
	URL string
	// RedirectTo is where Redirect points.
	RedirectTo string

	behaviour atomic.Value
	attempts  atomic.Int64
	inFlight  atomic.Int64
	maxFlight atomic.Int64
	release   chan struct{}

	mu       sync.Mutex
	received []ReceivedEvent
}

// NewEventReceiver starts a receiver that behaves as b, stopped when the test ends.
func NewEventReceiver(t testing.TB, b string) *EventReceiver {
	r, _ := newEventReceiver(t, b, false)
	return r
}

// NewTLSEventReceiver is NewEventReceiver over HTTPS with a certificate of its own, and the
// file (in the test's temporary directory) of the PEM CA that verifies it.
func NewTLSEventReceiver(t testing.TB, b string) (*EventReceiver, string) {
	return newEventReceiver(t, b, true)
}

func newEventReceiver(t testing.TB, b string, useTLS bool) (*EventReceiver, string) {
	r := &EventReceiver{release: make(chan struct{})}
	r.behaviour.Store(b)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	var caFile string
	if useTLS {
		srv.StartTLS()
		caFile = filepath.Join(t.TempDir(), "sink-ca.pem")
		ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
		if err := os.WriteFile(caFile, ca, 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		srv.Start()
	}
	t.Cleanup(func() { close(r.release); srv.CloseClientConnections(); srv.Close() })
	r.URL = srv.URL
	return r, caFile
}

// SetBehaviour changes how the receiver answers from the next request on.
func (r *EventReceiver) SetBehaviour(b string) { r.behaviour.Store(b) }

// Attempts is how many requests reached the receiver.
func (r *EventReceiver) Attempts() int64 { return r.attempts.Load() }

// MaxInFlight is the most requests the receiver held at once.
func (r *EventReceiver) MaxInFlight() int64 { return r.maxFlight.Load() }

// Received is what the receiver accepted, in arrival order.
func (r *EventReceiver) Received() []ReceivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ReceivedEvent(nil), r.received...)
}

func (r *EventReceiver) serve(w http.ResponseWriter, req *http.Request) {
	r.attempts.Add(1)
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for {
		m := r.maxFlight.Load()
		if n <= m || r.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	switch r.behaviour.Load().(string) {
	case Drop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	case Fail:
		w.WriteHeader(http.StatusServiceUnavailable)
	case Reject:
		w.WriteHeader(http.StatusBadRequest)
	case Hang:
		select {
		case <-r.release:
		case <-req.Context().Done():
		}
	case Redirect:
		http.Redirect(w, req, r.RedirectTo, http.StatusFound)
	default:
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		ev, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.received = append(r.received, ReceivedEvent{Event: *ev, Header: req.Header.Clone(), Body: body, At: time.Now()})
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}
}

// Says is what a received event says in short: the <what> of its type, and for progress the
// entry and milestone (progress.upload.50).
func (e ReceivedEvent) Says() string {
	what := strings.TrimSuffix(strings.TrimPrefix(e.Event.Type(), notify.TypePrefix), ".v1")
	if what == notify.Progress {
		var d notify.Data
		_ = json.Unmarshal(e.Event.Data(), &d)
		return fmt.Sprintf("%s.%s.%d", what, d.Entry, d.Milestone)
	}
	return what
}

// About lists what the receiver accepted about task namespace/name, in arrival order.
func (r *EventReceiver) About(namespace, name string) []string {
	var out []string
	for _, ev := range r.Received() {
		if ev.Event.Subject() == namespace+"/"+name {
			out = append(out, ev.Says())
		}
	}
	return out
}

// Distinct lists what the receiver accepted about task namespace/name once each, in the order
// of first arrival, and describes every announcement that arrived again under another id.
func (r *EventReceiver) Distinct(namespace, name string) (said, renamed []string) {
	idOf := map[string]string{}
	for _, ev := range r.Received() {
		if ev.Event.Subject() != namespace+"/"+name {
			continue
		}
		s := ev.Says()
		if id, ok := idOf[s]; ok {
			if id != ev.Event.ID() {
				renamed = append(renamed, fmt.Sprintf("%s sent as %s, then as %s", s, id, ev.Event.ID()))
			}
			continue
		}
		idOf[s] = ev.Event.ID()
		said = append(said, s)
	}
	return said, renamed
}
