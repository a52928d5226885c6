package plugin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// The progress endpoint's paths through the Kubernetes aggregation layer: kube-apiserver
// authenticates the user with their kubeconfig and forwards the stream.
const aggregatedPath = "/apis/progress.taskops.dev/v1alpha1"

// Bounds on what the plugin reads from a stream.
const (
	// maxEventBytes bounds one event (a task has at most 128 entries of a few hundred bytes).
	maxEventBytes = 1 << 20
	// maxStreamEntries is the CRD's bound on a task's progress entries.
	maxStreamEntries = 128
	// defaultRetry is the wait before reconnecting when the server suggested none.
	defaultRetry = 3 * time.Second
	// minRetry and maxRetry bound the server's suggestion.
	minRetry, maxRetry = 500 * time.Millisecond, time.Minute
)

func streamByID(id string) string { return aggregatedPath + "/progress/" + id }
func streamByName(namespace, name string) string {
	return aggregatedPath + "/namespaces/" + namespace + "/tasks/" + name
}

// streamSource follows a task through the progress endpoint's event stream (Accept:
// text/event-stream), reconnecting when the server ends it. It has the progress only: the
// events are the Cloudreve body, {"data":{<type>:{"total","current","identifier"}},...}.
type streamSource struct {
	url    string
	http   *http.Client
	name   string // the display name: "namespace/name" or "ID <id>"
	retry  time.Duration
	errors int
}

func (w *watchOptions) streamSource(path, name string) (source, error) {
	cfg, err := w.restConfig()
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	base := strings.TrimSuffix(cfg.Host, "/")
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	return &streamSource{url: base + strings.TrimSuffix(cfg.APIPath, "/") + path, http: hc, name: name, retry: defaultRetry}, nil
}

func (s *streamSource) phaseVisible() bool { return false }
func (s *streamSource) singleTask() bool   { return true }

// maxStreamFailures is how many connections in a row may fail before the watch gives up.
const maxStreamFailures = 5

func (s *streamSource) run(ctx context.Context, events chan<- event) error {
	for {
		err := s.once(ctx, events)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var refused *refusedError
		if errors.As(err, &refused) && !refused.retriable() {
			return err
		}
		if err != nil {
			if s.errors++; s.errors >= maxStreamFailures {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.retry):
		}
	}
}

// refusedError is a non-200 answer to the stream request.
type refusedError struct {
	status int
	body   string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("the progress stream was refused: HTTP %d %s", e.status, e.body)
}

func (e *refusedError) retriable() bool {
	return e.status == http.StatusTooManyRequests || e.status >= 500
}

func (s *streamSource) once(ctx context.Context, events chan<- event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("the progress stream: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("the progress stream: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &refusedError{status: resp.StatusCode, body: oneLine(strings.TrimSpace(string(b)))}
	}
	return readEvents(resp.Body, func(f eventField) error {
		switch f.name {
		case "retry":
			s.retry = min(max(f.retry, minRetry), maxRetry)
			return nil
		default:
			entries, err := parseProgress(f.data)
			if err != nil {
				return err
			}
			s.errors = 0
			t := &workflowv1alpha1.WorkflowTask{}
			t.Namespace, t.Name = splitName(s.name)
			t.Status.Progress = entries
			if !send(ctx, events, event{task: t}) {
				return ctx.Err()
			}
			return nil
		}
	})
}

// splitName makes the display name the task's key: "namespace/name", or "" and "ID <id>".
func splitName(name string) (string, string) {
	if ns, n, ok := strings.Cut(name, "/"); ok {
		return ns, n
	}
	return "", name
}

// eventField is what readEvents hands on: a whole event's data, or a retry suggestion.
type eventField struct {
	name  string
	data  []byte
	retry time.Duration
}

// readEvents parses a text/event-stream (the subset the endpoint sends: data, retry and
// comments; other fields are ignored as the SSE specification says). An event or line larger
// than maxEventBytes is an error rather than memory without bound.
func readEvents(r io.Reader, handle func(eventField) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if data.Len() > 0 {
				if err := handle(eventField{name: "message", data: bytes.TrimSuffix(data.Bytes(), []byte("\n"))}); err != nil {
					return err
				}
				data.Reset()
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if data.Len()+len(value) > maxEventBytes {
				return fmt.Errorf("the progress stream sent an event over %d bytes", maxEventBytes)
			}
			data.Write(value)
			data.WriteByte('\n')
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				if err := handle(eventField{name: "retry", retry: time.Duration(ms) * time.Millisecond}); err != nil {
					return err
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the progress stream: %w", err)
	}
	return nil
}

// parseProgress reads one event's body: the Cloudreve success envelope. Another code is the
// server's error, returned as such.
func parseProgress(b []byte) ([]workflowv1alpha1.ProgressEntry, error) {
	var body struct {
		Data map[string]struct {
			Total      int64  `json:"total"`
			Current    int64  `json:"current"`
			Identifier string `json:"identifier"`
		} `json:"data"`
		Code *int   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("the progress stream sent an event that is not the progress body: %w", err)
	}
	if body.Code == nil || *body.Code != 0 {
		return nil, fmt.Errorf("the progress endpoint answered %s", oneLine(string(b)))
	}
	if len(body.Data) > maxStreamEntries {
		return nil, fmt.Errorf("the progress stream sent %d entries; a task has at most %d", len(body.Data), maxStreamEntries)
	}
	entries := make([]workflowv1alpha1.ProgressEntry, 0, len(body.Data))
	for typ, p := range body.Data {
		entries = append(entries, workflowv1alpha1.ProgressEntry{Type: oneLine(typ), Current: max(p.Current, 0), Total: max(p.Total, 0), Identifier: p.Identifier})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Type < entries[j].Type })
	return entries, nil
}
