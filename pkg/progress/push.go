package progress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/transport"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// pushSink pushes to the operator's ingest endpoint (PUT: the writer's whole state; PATCH: one
// entry's change) with the pod's projected token for the ingest audience. The operator keeps
// the values, shows them at once and writes them to the status within its budget.
type pushSink struct {
	http                 *http.Client
	url, namespace, task string
	writer               string
	uid                  types.UID
	token                transport.ResettableTokenSource
	timeout              time.Duration
	stats                *counters
}

// maxAnswerBytes bounds what is read of an answer (an envelope is well under 1 KiB).
const maxAnswerBytes = 64 << 10

func newPushSink(opts Options, stats *counters) (*pushSink, error) {
	t := opts.Ingest
	if opts.UID == "" {
		return nil, errors.New("progress: pushing needs the task's UID (Options.UID, $" + workflowv1alpha1.EnvTaskUID + ")")
	}
	if t.URL == "" || (t.Token == "" && t.TokenFile == "") {
		return nil, errors.New("progress: IngestTarget needs URL and Token or TokenFile")
	}
	// The push goes to the path of the task the options name, on the URL's server (a --task
	// given to the CLI must not push into the pod's own task).
	u, err := url.Parse(t.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("progress: the push URL %q is not an https URL", t.URL)
	}
	u.Path, u.RawPath, u.RawQuery = ingest.Path(opts.Namespace, opts.Task), "", ""
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(t.CAData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.CAData) {
			return nil, errors.New("progress: the ingest CA bundle ($" + ingest.EnvCA + ") holds no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	var ts transport.ResettableTokenSource
	if t.Token != "" {
		ts = staticToken(t.Token)
	} else {
		ts = transport.NewCachedFileTokenSource(t.TokenFile)
	}
	return &pushSink{
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}},
		url: u.String(), namespace: opts.Namespace, task: opts.Task, writer: opts.FieldManager, uid: opts.UID,
		token: ts, timeout: opts.RequestTimeout, stats: stats,
	}, nil
}

// put sends the writer's whole state. resend is how soon to send it again, unchanged, when the
// operator has not written it to the status yet (a replica that dies before writing loses
// nothing: the next one gets it again).
func (p *pushSink) put(ctx context.Context, entries []workflowv1alpha1.ProgressEntry, final bool) (time.Duration, error) {
	if entries == nil {
		entries = []workflowv1alpha1.ProgressEntry{}
	}
	body, err := json.Marshal(ingest.Push{TaskUID: p.uid, Writer: p.writer, Entries: entries, Final: final})
	if err != nil {
		return 0, fmt.Errorf("progress: encoding the push: %w", err)
	}
	ack, err := p.send(ctx, http.MethodPut, body)
	p.stats.count(err)
	if err != nil || !ack.Pending {
		return 0, err
	}
	return max(time.Duration(ack.ResendAfterSeconds)*time.Second, time.Second), nil
}

// change sends a one-entry change; the operator computes it from what the task shows. (The
// field manager is the direct path's: the operator names the writer after the type.)
func (p *pushSink) change(ctx context.Context, c ingest.Change, _ string) error {
	c.TaskUID = p.uid
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("progress: encoding the change: %w", err)
	}
	_, err = p.send(ctx, http.MethodPatch, body)
	p.stats.count(err)
	return err
}

// envelope is the endpoint's answer: code 0 with the ack, or an error code and message.
type envelope struct {
	Code int        `json:"code"`
	Msg  string     `json:"msg"`
	Data ingest.Ack `json:"data"`
}

// send makes one request and reads its answer into an ack or an error that says what it means
// the way the direct path's errors do (apierrors: throttled with Retry-After, unauthorized,
// forbidden; ErrTaskReplaced for a replaced task).
func (p *pushSink) send(ctx context.Context, method string, body []byte) (ingest.Ack, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	token, err := p.token.Token()
	if err != nil {
		return ingest.Ack{}, fmt.Errorf("progress: reading the ingest token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.url, bytes.NewReader(body))
	if err != nil {
		return ingest.Ack{}, fmt.Errorf("progress: the push URL %q: %w", p.url, err)
	}
	req.Header.Set("Authorization", "Bearer "+token.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "workflowtask-progress")
	p.stats.bytes.Add(int64(len(body)))
	start := time.Now()
	resp, err := p.http.Do(req)
	if err != nil {
		return ingest.Ack{}, fmt.Errorf("progress: pushing to %s: %w", p.url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return ingest.Ack{}, fmt.Errorf("progress: reading the answer of %s: %w", p.url, err)
	}
	var env envelope
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &env) != nil {
		return ingest.Ack{}, fmt.Errorf("progress: pushing to %s: HTTP %d: %w", p.url, resp.StatusCode,
			apierrors.NewGenericServerResponse(resp.StatusCode, method, schema.GroupResource{}, "", truncate(string(raw), 200), 0, true))
	}
	if env.Code == 0 {
		return env.Data, nil
	}
	if env.Code == 401 {
		p.token.ResetTokenOlderThan(start) // the kubelet may have rotated it: read the file again
	}
	return ingest.Ack{}, p.refusal(env, resp.Header.Get("Retry-After"))
}

// refusal is the error of an answer with an error code.
func (p *pushSink) refusal(env envelope, retryAfter string) error {
	gr := schema.GroupResource{Group: workflowv1alpha1.GroupVersion.Group, Resource: "workflowtasks"}
	msg := fmt.Sprintf("the operator answered %d %q", env.Code, env.Msg)
	var err error
	switch env.Code {
	case 429:
		secs, _ := strconv.Atoi(retryAfter)
		err = apierrors.NewTooManyRequests(msg, max(secs, 1))
	case 401:
		err = apierrors.NewUnauthorized(msg)
	case 403:
		err = apierrors.NewForbidden(gr, p.task, errors.New(msg))
	case 409:
		return fmt.Errorf("progress: task %s/%s: %w (%s; this reporter writes for UID %s): nothing more is written",
			p.namespace, p.task, ErrTaskReplaced, msg, p.uid)
	case 40001:
		err = apierrors.NewBadRequest(msg)
	default:
		err = apierrors.NewInternalError(errors.New(msg))
	}
	return fmt.Errorf("progress: pushing to task %s/%s: %w", p.namespace, p.task, err)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// staticToken is a token given as a string (tests, programs outside a pod).
type staticToken string

func (s staticToken) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: string(s)}, nil
}
func (staticToken) ResetTokenOlderThan(time.Time) {}
