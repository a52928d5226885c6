package endpoint_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// BenchmarkHandler: one request through the handler with authentication and authorization
// answered from their caches (as for a client polling every second), tasks from the informer
// cache. No TLS, no network: the endpoint's own cost per request.
//
//	go test -run '^$' -bench Handler -benchmem ./test/integration/endpoint
func BenchmarkHandler(b *testing.B) {
	opts := apiserver.NewOptions()
	cfg := &apiserver.Config{Options: opts, ReviewConfig: mgr.GetConfig(), Log: logr.Discard()}
	completed, err := cfg.Complete()
	if err != nil {
		b.Fatal(err)
	}
	srv := completed.New()
	informer, err := mgr.GetCache().GetInformer(context.Background(), &workflowv1alpha1.WorkflowTask{})
	if err != nil {
		b.Fatal(err)
	}
	reg, err := informer.AddEventHandler(srv.TaskEvents())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = informer.RemoveEventHandler(reg) })
	h := srv.Handler()
	owner := newSAUser(b, "users", "bench-owner")
	admin := newSAUser(b, "users", "bench-admin")
	stranger := newSAUser(b, "users", "bench-stranger")
	task := createTaskWithProgress(b, testutil.MakeTask("bench", "bench").Owner(owner.name),
		entry("upload", 16889, 12836332, ""), entry("upload_count", 25, 34, ""))
	bindProgressAdminB(b, admin.name)
	path := "/workflow/progress/" + workflowv1alpha1.TaskIDFromUID(task.UID)

	for _, c := range []struct {
		name, token, want string
	}{{"owner", owner.token, `{"data":{"upload"`}, {"admin", admin.token, `{"data":{"upload"`}, {"stranger", stranger.token, `{"data":{},`}} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			// The delegating authenticator removes the header from a request it authenticated
			// (as kube-apiserver does); a real request comes with its own.
			auth := []string{"Bearer " + c.token}
			serve := func() *httptest.ResponseRecorder {
				req.Header["Authorization"] = auth
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec
			}
			if rec := serve(); !strings.HasPrefix(rec.Body.String(), c.want) { // fill the caches
				b.Fatalf("%s: %s", c.name, rec.Body)
			}
			b.ReportAllocs()
			for b.Loop() {
				if rec := serve(); rec.Code != http.StatusOK || rec.Body.Len() == 0 {
					b.Fatal(rec.Code)
				}
			}
			if rec := serve(); !strings.HasPrefix(rec.Body.String(), c.want) {
				b.Fatalf("%s after the loop: %s", c.name, rec.Body)
			}
		})
	}
}
