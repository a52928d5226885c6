package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"

	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// The default push URL is the ingest Service in the operator's namespace, which the manager
// learns from $POD_NAMESPACE.
func TestDefaultIngestURL(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "ops")
	if got, want := NewOptions().IngestURL, "https://workflowtask-progress-ingest.ops.svc"; got != want {
		t.Errorf("default --progress-ingest-url = %q, want %q", got, want)
	}
}

// The CA bundle comes from --progress-ingest-ca-file when it is set, else from the serving
// certificate's bundle ConfigMap; with neither there is none, which is an error naming both.
func TestIngestDefaults(t *testing.T) {
	ca := testutil.CAPEM(t, "ca")
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := types.NamespacedName{Namespace: "ops", Name: "workflowtask-progress-ca-bundle"}
	for name, tc := range map[string]struct {
		url, caFile string
		bundle      types.NamespacedName
		wantURL     string
		wantSource  string // the CA bundle's type
		wantErr     string
	}{
		"the CA file": {url: "https://h", caFile: file, bundle: bundle, wantURL: "https://h", wantSource: "*controllers.fileCABundle"},
		"the ConfigMap": {url: "https://h/prefix/", bundle: bundle, wantURL: "https://h/prefix",
			wantSource: "*controllers.configMapCABundle"},
		"neither": {url: "https://h", wantErr: "--progress-ingest: the pods need the CA bundle of the ingest endpoint: set --progress-ingest-ca-file"},
		"a CA file gone since Validate": {url: "https://h", caFile: file + ".gone", bundle: bundle,
			wantErr: "--progress-ingest-ca-file: CA bundle file " + file + ".gone"},
	} {
		t.Run(name, func(t *testing.T) {
			o := NewOptions()
			o.IngestURL, o.IngestCAFile = tc.url, tc.caFile
			got, err := o.IngestDefaults(nil, tc.bundle)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("IngestDefaults() error = %v, want %q", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			type summary struct{ URL, Source string }
			want, have := summary{tc.wantURL, tc.wantSource}, summary{got.URL, fmt.Sprintf("%T", got.CA)}
			if diff := cmp.Diff(want, have); diff != "" {
				t.Errorf("IngestDefaults() (-want +got):\n%s", diff)
			}
			if tc.caFile != "" {
				if pem, err := got.CA.PEM(context.Background()); err != nil || pem != ca {
					t.Errorf("CA.PEM() = %q, %v; want the file's", pem, err)
				}
			}
		})
	}
}
