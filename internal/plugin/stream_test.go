package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

func TestReadEvents(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []eventField
		wantErr string
	}{
		{name: "the endpoint's stream: retry, an event, a heartbeat, another event",
			in: "retry: 3000\n\ndata: {\"a\":1}\n\n: heartbeat\n\ndata: {\"a\":2}\n\n",
			want: []eventField{{name: "retry", retry: 3 * time.Second}, {name: "message", data: []byte(`{"a":1}`)},
				{name: "message", data: []byte(`{"a":2}`)}}},
		{name: "multi-line data is joined with newlines; unknown fields are ignored",
			in:   "event: x\nid: 7\ndata: {\"a\":\ndata:1}\nbogus\n\n",
			want: []eventField{{name: "message", data: []byte("{\"a\":\n1}")}}},
		{name: "an event cut off by the end of the stream is dropped",
			in: "data: {\"a\":1}\n\ndata: {\"a\":2}", want: []eventField{{name: "message", data: []byte(`{"a":1}`)}}},
		{name: "a junk retry is ignored", in: "retry: -5\nretry: 99999999999999\nretry: soon\n\n"},
		{name: "a line without end is refused, not buffered without bound",
			in: "data: " + strings.Repeat("x", maxEventBytes+10), wantErr: "token too long"},
		{name: "an event of many lines over the bound is refused",
			in: strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", maxEventBytes/1000+2), wantErr: "an event over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []eventField
			err := readEvents(strings.NewReader(tc.in), func(f eventField) error {
				got = append(got, eventField{name: f.name, data: append([]byte(nil), f.data...), retry: f.retry})
				return nil
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(eventField{})); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseProgress(t *testing.T) {
	many := make([]string, maxStreamEntries+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"e%d":{"total":1,"current":1}`, i)
	}
	for _, tc := range []struct {
		name    string
		body    string
		want    []workflowv1alpha1.ProgressEntry
		wantErr string
	}{
		{name: "the Cloudreve body", body: `{"data":{"upload_count":{"total":6,"current":3,"identifier":""},"upload":{"total":2048,"current":1024,"identifier":"/a"}},"code":0,"msg":""}`,
			want: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 1024, Total: 2048, Identifier: "/a"}, {Type: "upload_count", Current: 3, Total: 6}}},
		{name: "empty: unknown task, a stranger's, or no progress yet", body: `{"data":{},"code":0,"msg":""}`, want: []workflowv1alpha1.ProgressEntry{}},
		{name: "negative values are read as 0; control characters in a type become spaces",
			body: `{"data":{"up\u001b[2Jload":{"total":-1,"current":-5}},"code":0}`,
			want: []workflowv1alpha1.ProgressEntry{{Type: "up [2Jload"}}},
		{name: "an error envelope", body: `{"code":401,"msg":"Login required","correlation_id":"x"}`, wantErr: "Login required"},
		{name: "no code at all", body: `{"data":{}}`, wantErr: "answered"},
		{name: "not JSON", body: `<html>`, wantErr: "not the progress body"},
		{name: "a number too large", body: `{"data":{"a":{"total":1e30,"current":1}},"code":0}`, wantErr: "not the progress body"},
		{name: "more entries than a task may have", body: `{"data":{` + strings.Join(many, ",") + `},"code":0}`, wantErr: "at most 128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProgress([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

// The stream client reconnects when the server ends a stream (after the server's retry,
// bounded below), gives up at once on a refusal that retrying cannot change, and after
// maxStreamFailures failures in a row otherwise. The server is a stand-in for the endpoint
// (the real one is exercised in test/integration/endpoint).
func TestStreamSourceReconnects(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status       int
		wantRequests int64
		wantErr      string
		wantEvents   int
	}{
		{name: "streams that end are reopened", status: http.StatusOK, wantRequests: 3, wantEvents: 3},
		{name: "forbidden is final", status: http.StatusForbidden, wantRequests: 1, wantErr: "HTTP 403"},
		{name: "unavailable is retried, up to a bound", status: http.StatusServiceUnavailable, wantRequests: maxStreamFailures, wantErr: "HTTP 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if r.Header.Get("Accept") != "text/event-stream" {
					t.Errorf("Accept = %q", r.Header.Get("Accept"))
				}
				w.WriteHeader(tc.status)
				if tc.status == http.StatusOK {
					fmt.Fprint(w, "retry: 1\n\ndata: {\"data\":{\"upload\":{\"total\":2,\"current\":1}},\"code\":0,\"msg\":\"\"}\n\n")
				} else {
					fmt.Fprint(w, `{"code":403,"msg":"`+strings.Repeat("x", 10000)+`"}`)
				}
			}))
			defer srv.Close()
			s := &streamSource{url: srv.URL, http: srv.Client(), name: "ns/t", retry: time.Millisecond}
			events := make(chan event, 100)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- s.run(ctx, events) }()
			if tc.wantErr == "" {
				for range tc.wantEvents {
					ev := <-events
					if ev.task.Name != "t" || len(ev.task.Status.Progress) != 1 {
						t.Errorf("event %+v", ev.task)
					}
				}
				cancel()
			}
			err := <-errc
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || len(err.Error()) > 1000) {
				t.Errorf("run = %v; want an error with %q, the server's body cut short", err, tc.wantErr)
			}
			if tc.wantErr == "" && !errors.Is(err, context.Canceled) {
				t.Errorf("run = %v; want it to end with its context", err)
			}
			if got := requests.Load(); tc.wantErr != "" && got != tc.wantRequests || tc.wantErr == "" && got < tc.wantRequests {
				t.Errorf("%d requests, want %d", got, tc.wantRequests)
			}
			if s.retry != minRetry && tc.status == http.StatusOK {
				t.Errorf("retry %s; the server's 1 ms must be raised to %s", s.retry, minRetry)
			}
			var refused *refusedError
			if tc.wantErr != "" && !errors.As(err, &refused) {
				t.Errorf("run = %T, want a refusedError", err)
			}
		})
	}
}

// Hostile command lines get a clear answer before anything reaches the cluster (here: a
// kubeconfig pointing nowhere, so any request would fail differently) and the right exit code.
func TestHostileArguments(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"watch", "../../api/v1/secrets"}, ExitCannotWatch, "is not a task name"},
		{[]string{"watch", "a/b"}, ExitCannotWatch, "is not a task name"},
		{[]string{"watch", "x\x1b[2J"}, ExitCannotWatch, "is not a task name"},
		{[]string{"watch", strings.Repeat("a", 300)}, ExitCannotWatch, "is not a task name"},
		{[]string{"watch", "--id", "../x"}, ExitCannotWatch, "is not a task ID"},
		{[]string{"watch", "--id", "AAAAAAAAAA", "extra"}, ExitCannotWatch, "watch takes a NAME"},
		{[]string{"watch", "-l", "a in (", "-A"}, ExitCannotWatch, "bad selector"},
		{[]string{"watch", "t", "--timeout", "-5s"}, ExitCannotWatch, "negative"},
		{[]string{"watch", "t", "-n", "Bad/NS"}, ExitCannotWatch, "is not a namespace"},
		{[]string{"watch"}, ExitCannotWatch, "watch takes a NAME"},
		{[]string{"get", "../x"}, ExitFailed, "is not a task name"},
		// Output formats are checked before anything is sent (the kubeconfig's server is closed).
		{[]string{"get", "-o", "xml"}, ExitFailed, "unknown output format"},
		{[]string{"get", "-o", "jsonpath={.items[0"}, ExitFailed, "-o jsonpath"},
		{[]string{"get", "-o", "go-template={{.x"}, ExitFailed, "-o go-template"},
		{[]string{"get", "-o", "custom-columns="}, ExitFailed, "-o custom-columns"},
		{[]string{"describe", "a/b"}, ExitFailed, "is not a task name"},
		{[]string{"logs", "-f", "../../api/v1/secrets"}, ExitFailed, "is not a task name"},
		{[]string{"cancel", ".."}, ExitFailed, "is not a task name"},
		{[]string{"frobnicate"}, ExitFailed, "unknown command"},
	} {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), append(tc.args, "--kubeconfig", kubeconfig),
			genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		if code != tc.code || !strings.Contains(errOut.String(), tc.inStderr) {
			t.Errorf("%q: exit code %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), tc.code, tc.inStderr)
		}
		if strings.ContainsRune(errOut.String()+out.String(), 0x1b) {
			t.Errorf("%q: an escape code reached the terminal: %q", tc.args, errOut.String())
		}
	}
}
