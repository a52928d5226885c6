package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// minBackoff is a sink's first wait after a failed attempt; it doubles up to the sink's
// MaxBackoff. Every worker of the sink waits it out, so a sink that is down gets about one
// attempt per worker per backoff, whatever the number of tasks waiting.
const minBackoff = 500 * time.Millisecond

// maxResponseBody is how much of a sink's answer is read (and dropped) to reuse the connection.
const maxResponseBody = 64 << 10

// sink is one configured receiver with its own HTTP client, queue and backoff.
type sink struct {
	cfg    Sink
	client *http.Client
	queue  workqueue.TypedDelayingInterface[types.UID]
	// acked is, per task, the Seq up to which this sink took its announcements; guarded by the
	// Notifier's mutex.
	acked map[types.UID]int64

	mu       sync.Mutex
	failures int
	retryAt  time.Time
}

func newSink(cfg Sink) (*sink, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = cfg.Workers
	tr.MaxIdleConnsPerHost = cfg.Workers
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate in it", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &sink{
		cfg: cfg,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout.Duration,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		queue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[types.UID]{Name: "notify-" + cfg.Name}),
		acked: map[types.UID]int64{},
	}, nil
}

// rejectedError is a sink's 4xx answer (but 408 and 429): the event will not be taken.
type rejectedError struct{ code int }

func (e rejectedError) Error() string { return fmt.Sprintf("answered %d", e.code) }

func isRejected(err error) bool { return errors.As(err, new(rejectedError)) }

// statusError is an answer that may change when asked again: 3xx, 408, 429, 5xx.
type statusError struct{ code int }

func (e statusError) Error() string {
	if e.code >= 300 && e.code < 400 {
		return fmt.Sprintf("answered %d (redirects are not followed)", e.code)
	}
	return fmt.Sprintf("answered %d", e.code)
}

// failureReason is the metric label of a failed attempt.
func failureReason(err error) string {
	var se statusError
	var ne net.Error
	switch {
	case errors.As(err, &se) && se.code < 400:
		return "redirect"
	case errors.As(err, &se):
		return fmt.Sprintf("status_%dxx", se.code/100)
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "connection"
	}
}

// send POSTs announcement a of task as a CloudEvent (times: the task's as its record says).
func (s *sink) send(ctx context.Context, task *workflowv1alpha1.WorkflowTask, times Outbox, a Announcement) error {
	ev, err := NewEvent(task, times, a)
	if err != nil {
		return rejectedError{code: 0}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, nil)
	if err != nil {
		return fmt.Errorf("request to %s: %w", s.cfg.Name, err)
	}
	wctx := binding.WithForceBinary(ctx)
	if s.cfg.Mode == ModeStructured {
		wctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteRequest(wctx, binding.ToMessage(&ev), req); err != nil {
		return fmt.Errorf("encoding %s: %w", ev.ID(), err)
	}
	if s.cfg.AuthorizationFile != "" {
		auth, err := os.ReadFile(s.cfg.AuthorizationFile)
		if err != nil {
			return fmt.Errorf("authorizationFile: %w", err)
		}
		req.Header.Set("Authorization", strings.TrimSpace(string(auth)))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("sending to %s: %w", s.cfg.Name, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c < 400 || c >= 500:
		return statusError{code: c}
	default:
		return rejectedError{code: c}
	}
}

// waitReady waits out the sink's backoff; false when ctx ended first.
func (s *sink) waitReady(ctx context.Context) bool {
	s.mu.Lock()
	wait := time.Until(s.retryAt)
	s.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// failed notes a failed attempt and returns the backoff before the next.
func (s *sink) failed() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := min(minBackoff<<min(s.failures, 16), s.cfg.MaxBackoff.Duration)
	s.failures++
	s.retryAt = time.Now().Add(d)
	return d
}

// succeeded ends the backoff.
func (s *sink) succeeded() {
	s.mu.Lock()
	s.failures, s.retryAt = 0, time.Time{}
	s.mu.Unlock()
}
