package notify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

func TestConfigValidate(t *testing.T) {
	cases := map[string]struct {
		sinks []Sink
		want  []string // each error names its field
	}{
		"fine":          {[]Sink{{Name: "a", URL: "https://x.example/e"}, {Name: "b", URL: "http://y:8080", Mode: ModeStructured}}, nil},
		"no sinks":      {nil, nil},
		"bad name":      {[]Sink{{Name: "A_b", URL: "http://x"}}, []string{"sinks[0].name"}},
		"duplicate":     {[]Sink{{Name: "a", URL: "http://x"}, {Name: "a", URL: "http://y"}}, []string{"sinks[1].name \"a\": used by another sink"}},
		"relative url":  {[]Sink{{Name: "a", URL: "/events"}}, []string{"sinks[0].url"}},
		"ftp url":       {[]Sink{{Name: "a", URL: "ftp://x/"}}, []string{"sinks[0].url"}},
		"mode":          {[]Sink{{Name: "a", URL: "http://x", Mode: "batch"}}, []string{"sinks[0].mode"}},
		"negative time": {[]Sink{{Name: "a", URL: "http://x", Timeout: metav1.Duration{Duration: -time.Second}}}, []string{"sinks[0].timeout"}},
		"all at once": {[]Sink{{Name: "", URL: "x", Mode: "m", Workers: 65}},
			[]string{"sinks[0].name", "sinks[0].url", "sinks[0].mode", "sinks[0].workers"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := Config{Sinks: tc.sinks}.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want errors naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestOptionsLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sinks.yaml")
	if err := os.WriteFile(file, []byte("sinks:\n- name: broker\n  url: http://broker-ingress.knative-eventing.svc/ns/default\n  mode: structured\n  timeout: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := (&Options{ConfigFile: file, SinkURL: "https://hooks.example/wft"}).Load()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Sinks: []Sink{
		{Name: "broker", URL: "http://broker-ingress.knative-eventing.svc/ns/default", Mode: ModeStructured, Timeout: metav1.Duration{Duration: 5 * time.Second}},
		{Name: "default", URL: "https://hooks.example/wft"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := os.WriteFile(file, []byte("sinks:\n- name: a\n  url: http://x\n  retries: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Options{ConfigFile: file}).Load(); err == nil || !strings.Contains(err.Error(), "retries") {
		t.Errorf("an unknown field: %v, want an error naming it", err)
	}
	if c, err := (&Options{}).Load(); err != nil || len(c.Sinks) != 0 {
		t.Errorf("no flags: %+v, %v", c, err)
	}
}

func TestAnnouncementIDAndType(t *testing.T) {
	cases := []struct {
		a          Announcement
		id, evType string
	}{
		{Announcement{Seq: 1, What: Queued}, "u-1.queued", "dev.taskops.workflowtask.queued.v1"},
		{Announcement{Seq: 7, What: Progress, Entry: "upload", Milestone: 50}, "u-1.progress.upload.50", "dev.taskops.workflowtask.progress.v1"},
		{Announcement{Seq: 9, What: Stalled}, "u-1.stalled.9", "dev.taskops.workflowtask.stalled.v1"},
		{Announcement{Seq: 10, What: Succeeded}, "u-1.succeeded", "dev.taskops.workflowtask.succeeded.v1"},
	}
	for _, tc := range cases {
		if got := tc.a.ID("u-1"); got != tc.id {
			t.Errorf("%+v: id %q, want %q", tc.a, got, tc.id)
		}
		if got := tc.a.Type(); got != tc.evType {
			t.Errorf("%+v: type %q, want %q", tc.a, got, tc.evType)
		}
	}
}

func TestFailureReason(t *testing.T) {
	cases := map[error]string{
		statusError{code: 302}: "redirect",
		statusError{code: 503}: "status_5xx",
		statusError{code: 429}: "status_4xx",
		os.ErrDeadlineExceeded: "timeout",
		os.ErrClosed:           "connection",
	}
	for err, want := range cases {
		if got := failureReason(err); got != want {
			t.Errorf("failureReason(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestBackoffDoublesToMax(t *testing.T) {
	s := &sink{cfg: Sink{MaxBackoff: metav1.Duration{Duration: 3 * time.Second}}}
	var got []time.Duration
	for range 5 {
		got = append(got, s.failed())
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	s.succeeded()
	if d := s.failed(); d != 500*time.Millisecond {
		t.Errorf("after a success the backoff starts over at 0.5s, got %v", d)
	}
}

func TestSinkWants(t *testing.T) {
	task := func(ns, notify string) *workflowv1alpha1.WorkflowTask {
		w := &workflowv1alpha1.WorkflowTask{}
		w.Namespace = ns
		if notify != "" {
			w.Annotations = map[string]string{workflowv1alpha1.AnnotationNotify: notify}
		}
		return w
	}
	cases := map[string]struct {
		sink Sink
		task *workflowv1alpha1.WorkflowTask
		want bool
	}{
		"every namespace":                         {Sink{Name: "a"}, task("x", ""), true},
		"its namespace":                           {Sink{Name: "a", Namespaces: []string{"x"}}, task("x", ""), true},
		"another namespace":                       {Sink{Name: "a", Namespaces: []string{"y"}}, task("x", ""), false},
		"opt-in, not named":                       {Sink{Name: "a", OptIn: true}, task("x", ""), false},
		"opt-in, named among others":              {Sink{Name: "a", OptIn: true}, task("x", "b, a"), true},
		"opt-in, a prefix only":                   {Sink{Name: "a", OptIn: true}, task("x", "ab"), false},
		"opt-in, named, namespace not offered":    {Sink{Name: "a", OptIn: true, Namespaces: []string{"y"}}, task("x", "a"), false},
		"named, but not opt-in: takes all anyway": {Sink{Name: "a"}, task("x", "zzz"), true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := tc.sink.wants(tc.task); got != tc.want {
				t.Errorf("wants = %t, want %t", got, tc.want)
			}
		})
	}
}
