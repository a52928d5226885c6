package controllers

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	goodCA, badCA := filepath.Join(dir, "good.crt"), filepath.Join(dir, "bad.crt")
	if err := os.WriteFile(goodCA, []byte(testutil.CAPEM(t, "ca")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badCA, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args    []string
		wantErr string
	}{
		"defaults":           {},
		"endpoint alone":     {args: []string{"--controllers=false"}},
		"no workers":         {args: []string{"--workers=0"}, wantErr: "--workers"},
		"no sidecar image":   {args: []string{"--progress-image="}, wantErr: "--progress-image"},
		"both wrong at once": {args: []string{"--workers=-1", "--progress-image="}, wantErr: "--workers must be at least 1\n--progress-image is empty"},

		// Ingest mode's options, checked whether --progress-ingest is on or not.
		"ingest URL with port and path": {args: []string{"--progress-ingest-url=https://ingest.example:8443/operator/"}},
		"ingest URL over http": {args: []string{"--progress-ingest-url=http://workflowtask-progress-ingest.ns.svc"},
			wantErr: `--progress-ingest-url: "http://workflowtask-progress-ingest.ns.svc" is not an https URL`},
		"ingest URL without host": {args: []string{"--progress-ingest-url=https:///x"}, wantErr: "--progress-ingest-url: \"https:///x\" names no host"},
		"ingest URL with query":   {args: []string{"--progress-ingest-url=https://h/?a=b"}, wantErr: "--progress-ingest-url: \"https://h/?a=b\" must be https://host[:port][/path]"},
		"ingest URL empty":        {args: []string{"--progress-ingest-url="}, wantErr: "--progress-ingest-url"},
		"ingest CA file":          {args: []string{"--progress-ingest-ca-file=" + goodCA}},
		"ingest CA file missing": {args: []string{"--progress-ingest-ca-file=" + filepath.Join(dir, "none")},
			wantErr: "--progress-ingest-ca-file: open " + filepath.Join(dir, "none")},
		"ingest CA file not PEM": {args: []string{"--progress-ingest-ca-file=" + badCA},
			wantErr: "--progress-ingest-ca-file " + badCA + ": not PEM"},
	} {
		t.Run(name, func(t *testing.T) {
			o := NewOptions()
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, c.wantErr)
			}
		})
	}
}
