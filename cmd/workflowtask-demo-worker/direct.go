package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"

	"k8s.io/client-go/rest"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// serviceAccountToken is where a pod that mounts its ServiceAccount's kube-apiserver token has it.
const serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// directFieldManager is the field manager of the direct writes tryDirectWrites attempts: a task's
// status shows it only if one of them was let through.
const directFieldManager = "workflowtask-demo-worker-direct"

// tryDirectWrites tries to do what a pod in direct mode does, writing its task's status on
// kube-apiserver ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, verified with caFile), with
// each credential the pod has — none, then the projected ingest token — and prints whether the
// pod has a kube-apiserver token and each write's HTTP status. In ingest mode a task's pods have
// no API rights: the token is absent, the writes are refused (401/403).
func tryDirectWrites(ctx context.Context, caFile string) {
	state := "absent"
	if _, err := os.Stat(serviceAccountToken); err == nil {
		state = "present"
	}
	fmt.Printf("workflowtask-demo-worker: kube-apiserver token: %s\n", state)
	for _, c := range []struct{ how, tokenFile string }{
		{"without credentials", ""},
		{"with the ingest token", os.Getenv(ingest.EnvTokenFile)},
	} {
		if c.how != "without credentials" && c.tokenFile == "" {
			fmt.Printf("workflowtask-demo-worker: direct status write %s: no $%s\n", c.how, ingest.EnvTokenFile)
			continue
		}
		code, err := directStatusWrite(ctx, caFile, c.tokenFile)
		if err != nil {
			fmt.Printf("workflowtask-demo-worker: direct status write %s: %v\n", c.how, err)
			continue
		}
		fmt.Printf("workflowtask-demo-worker: direct status write %s: HTTP %d\n", c.how, code)
	}
}

// directStatusWrite server-side applies one progress entry (type "direct") to the task's status
// on kube-apiserver, authenticated by the token in tokenFile (none when empty), and returns the
// answer's HTTP status.
func directStatusWrite(ctx context.Context, caFile, tokenFile string) (int, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	name, namespace := os.Getenv(workflowv1alpha1.EnvTaskName), os.Getenv(workflowv1alpha1.EnvTaskNamespace)
	if host == "" || port == "" || name == "" || namespace == "" {
		return 0, errors.New("needs $KUBERNETES_SERVICE_HOST, $KUBERNETES_SERVICE_PORT and the task's $" +
			workflowv1alpha1.EnvTaskName + " and $" + workflowv1alpha1.EnvTaskNamespace)
	}
	hc, err := rest.HTTPClientFor(&rest.Config{
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		BearerTokenFile: tokenFile,
	})
	if err != nil {
		return 0, fmt.Errorf("a client for kube-apiserver: %w", err)
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": workflowv1alpha1.GroupVersion.String(),
		"kind":       "WorkflowTask",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"status":     map[string]any{"progress": []any{map[string]any{"type": "direct", "current": 1, "total": 1}}},
	})
	if err != nil {
		return 0, fmt.Errorf("the apply body: %w", err)
	}
	u := url.URL{
		Scheme:   "https",
		Host:     net.JoinHostPort(host, port),
		Path:     "/apis/" + workflowv1alpha1.GroupVersion.String() + "/namespaces/" + namespace + "/workflowtasks/" + name + "/status",
		RawQuery: url.Values{"fieldManager": {directFieldManager}, "force": {"true"}}.Encode(),
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/apply-patch+yaml")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("PATCH %s: %w", u.Path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
