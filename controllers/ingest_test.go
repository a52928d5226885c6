package controllers

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The pod defaults resolve to a push target only in ingest mode; a CA bundle that cannot be
// had is an error (no Job is created without it).
func TestPodDefaultsPushTarget(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		defaults PodDefaults
		want     *pushTarget
		wantErr  string
	}{
		"direct mode": {defaults: PodDefaults{ProgressImage: "p"}},
		"ingest": {
			defaults: PodDefaults{Ingest: &IngestDefaults{URL: "https://h", CA: StaticCABundle("pem")}},
			want:     &pushTarget{baseURL: "https://h", caPEM: "pem"},
		},
		"no CA bundle": {
			defaults: PodDefaults{Ingest: &IngestDefaults{URL: "https://h", CA: failingCA{}}},
			wantErr:  "progress ingest: the CA bundle for the task's pods: not yet",
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tc.defaults.pushTarget(ctx)
			if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
				t.Fatalf("pushTarget() error = %v, want %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(pushTarget{})); diff != "" {
				t.Errorf("pushTarget() (-want +got):\n%s", diff)
			}
		})
	}
}

type failingCA struct{}

func (failingCA) PEM(context.Context) (string, error) { return "", errors.New("not yet") }
