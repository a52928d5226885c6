package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestParseCABundle(t *testing.T) {
	ca1, ca2 := testutil.CAPEM(t, "one"), testutil.CAPEM(t, "two")
	key := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"
	broken := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	for name, tc := range map[string]struct {
		pem     string
		wantErr string
	}{
		"one CA":                {pem: ca1},
		"two CAs":               {pem: ca1 + ca2},
		"surrounding blanks":    {pem: "\n" + ca1 + "\n\n"},
		"empty":                 {pem: "", wantErr: "no PEM certificate"},
		"not PEM":               {pem: "hello", wantErr: "not PEM"},
		"text after":            {pem: ca1 + "trailing", wantErr: "not PEM"},
		"a key among the certs": {pem: ca1 + key, wantErr: `PEM block 2 is a "EC PRIVATE KEY", not a CERTIFICATE`},
		"a broken certificate":  {pem: broken, wantErr: "PEM block 1: x509"},
	} {
		t.Run(name, func(t *testing.T) {
			err := parseCABundle([]byte(tc.pem))
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("parseCABundle() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// The file is read again when it changes; a broken or missing file keeps the bundle read
// before; a file that never held one is an error.
func TestFileCABundle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.crt")
	if _, err := NewFileCABundle(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("NewFileCABundle(missing file) = %v, want an error naming the file", err)
	}
	write := func(data string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	ca1, ca2 := testutil.CAPEM(t, "one"), testutil.CAPEM(t, "two")
	write(ca1, testutil.T0)
	b, err := NewFileCABundle(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	read := func() {
		t.Helper()
		pem, err := b.PEM(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pem)
	}
	read()
	write(ca1+ca2, testutil.T0.Add(time.Minute)) // a rotation: both trusted
	read()
	write("garbage", testutil.T0.Add(2*time.Minute))
	read()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	read()
	write(ca2, testutil.T0.Add(3*time.Minute))
	read()
	if diff := cmp.Diff([]string{ca1, ca1 + ca2, ca1 + ca2, ca1 + ca2, ca2}, got); diff != "" {
		t.Errorf("bundles read (-want +got):\n%s", diff)
	}
}
