package notify

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Modes of CloudEvents over HTTP.
const (
	// ModeBinary puts the attributes in ce-* headers and the data in the body (the default).
	ModeBinary = "binary"
	// ModeStructured sends the whole event as application/cloudevents+json.
	ModeStructured = "structured"
)

// Defaults of a sink.
const (
	DefaultTimeout = 10 * time.Second
	DefaultWorkers = 4
	// DefaultMaxBackoff is a sink's longest wait between failed attempts.
	DefaultMaxBackoff = 30 * time.Second
)

// Config is the notification configuration, a YAML file the platform team mounts from a
// ConfigMap (config/notifications), like Tekton's config-events.
type Config struct {
	// Sinks are where announcements go. Each sink gets every task's announcements, or those of
	// the namespaces it lists.
	Sinks []Sink `json:"sinks"`
}

// Sink is one receiver of CloudEvents over HTTP(S).
type Sink struct {
	// Name names the sink in metrics, Events and logs.
	Name string `json:"name"`
	// URL is where events are POSTed (http or https). Redirects are not followed: a 3xx
	// answer counts as a failed attempt.
	URL string `json:"url"`
	// Mode is binary (default) or structured.
	Mode string `json:"mode,omitempty"`
	// CAFile is a PEM bundle that verifies an https sink instead of the system's roots.
	CAFile string `json:"caFile,omitempty"`
	// AuthorizationFile is a file (a mounted Secret's key) whose content is sent as the
	// Authorization header, read at each attempt so a rotated Secret takes effect.
	AuthorizationFile string `json:"authorizationFile,omitempty"`
	// Namespaces limits the sink to tasks in these namespaces; empty: all.
	Namespaces []string `json:"namespaces,omitempty"`
	// OptIn: the sink takes only the tasks (of Namespaces) whose annotation
	// workflow.taskops.dev/notify names it; their owners subscribe without the platform team.
	OptIn bool `json:"optIn,omitempty"`
	// Timeout bounds one attempt (default 10s).
	Timeout metav1.Duration `json:"timeout,omitempty"`
	// Workers is how many events are sent to this sink at the same time (default 4).
	Workers int `json:"workers,omitempty"`
	// MaxBackoff is the longest wait after failed attempts (default 30s): the sink's backoff
	// doubles from 0.5s up to it, and a sink that recovers gets its events within it.
	MaxBackoff metav1.Duration `json:"maxBackoff,omitempty"`
}

var sinkName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// wants reports whether the sink takes the task's announcements.
func (s Sink) wants(task *workflowv1alpha1.WorkflowTask) bool {
	if len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, task.Namespace) {
		return false
	}
	if !s.OptIn {
		return true
	}
	for name := range strings.SplitSeq(task.Annotations[workflowv1alpha1.AnnotationNotify], ",") {
		if strings.TrimSpace(name) == s.Name {
			return true
		}
	}
	return false
}

// withDefaults fills what was left out.
func (s Sink) withDefaults() Sink {
	if s.Mode == "" {
		s.Mode = ModeBinary
	}
	if s.Timeout.Duration == 0 {
		s.Timeout.Duration = DefaultTimeout
	}
	if s.Workers == 0 {
		s.Workers = DefaultWorkers
	}
	if s.MaxBackoff.Duration == 0 {
		s.MaxBackoff.Duration = DefaultMaxBackoff
	}
	return s
}

// Validate checks the configuration, naming every field in error.
func (c Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, s := range c.Sinks {
		at := fmt.Sprintf("sinks[%d]", i)
		if !sinkName.MatchString(s.Name) {
			errs = append(errs, fmt.Errorf("%s.name %q: a DNS label (lower-case letters, digits, '-', at most 63)", at, s.Name))
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q: used by another sink", at, s.Name))
		}
		seen[s.Name] = true
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s.url %q: an absolute http or https URL", at, s.URL))
		}
		if s.Mode != "" && s.Mode != ModeBinary && s.Mode != ModeStructured {
			errs = append(errs, fmt.Errorf("%s.mode %q: binary or structured", at, s.Mode))
		}
		if s.Timeout.Duration < 0 {
			errs = append(errs, fmt.Errorf("%s.timeout: must not be negative", at))
		}
		if s.MaxBackoff.Duration < 0 {
			errs = append(errs, fmt.Errorf("%s.maxBackoff: must not be negative", at))
		}
		if s.Workers < 0 || s.Workers > 64 {
			errs = append(errs, fmt.Errorf("%s.workers %d: between 1 and 64", at, s.Workers))
		}
	}
	return errors.Join(errs...)
}

// Options are the operator's notification flags.
type Options struct {
	// ConfigFile is the YAML Config; empty: SinkURL alone, or no notifications.
	ConfigFile string
	// SinkURL is a single sink (named "default", binary mode), for the simple case.
	SinkURL string
}

// AddFlags adds the options to fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.ConfigFile, "notify-config", o.ConfigFile,
		"YAML file of CloudEvents sinks that every task's phase changes and progress milestones are announced to "+
			"(docs/notifications.md; config/notifications mounts it from a ConfigMap). Empty: --notify-sink, or none.")
	fs.StringVar(&o.SinkURL, "notify-sink", o.SinkURL,
		"URL of one CloudEvents sink (binary mode) for every task's announcements; with --notify-config, one more sink named \"default\".")
}

// Load reads the configuration the options name; an empty Config when there is none.
func (o *Options) Load() (Config, error) {
	var c Config
	if o.ConfigFile != "" {
		raw, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return c, fmt.Errorf("--notify-config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			return c, fmt.Errorf("--notify-config %s: %w", o.ConfigFile, err)
		}
	}
	if o.SinkURL != "" {
		c.Sinks = append(c.Sinks, Sink{Name: "default", URL: o.SinkURL})
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("notification sinks: %w", err)
	}
	return c, nil
}
