package controllers

import (
	"flag"
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	for name, c := range map[string]struct {
		args    []string
		wantErr string
	}{
		"defaults":           {},
		"endpoint alone":     {args: []string{"--controllers=false"}},
		"no workers":         {args: []string{"--workers=0"}, wantErr: "--workers"},
		"no sidecar image":   {args: []string{"--progress-image="}, wantErr: "--progress-image"},
		"both wrong at once": {args: []string{"--workers=-1", "--progress-image="}, wantErr: "--workers must be at least 1\n--progress-image is empty"},
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
