package controllers

import (
	"errors"
	"flag"
	"time"

	"github.com/taskops/workflowtask-operator/controllers/notify"
)

// Options are the controller's command-line options (the endpoint's are apiserver.Options,
// the serving certificate's servingcert.Options).
type Options struct {
	// Enabled runs the WorkflowTask controller; false runs the progress endpoint alone.
	Enabled bool
	// Workers is how many tasks are reconciled at the same time.
	Workers int
	// ProgressImage is the progress-file sidecar's image for tasks that name none.
	ProgressImage string
	// ProgressInterval, when set, is the shortest time between two progress writes of every
	// task's reporters ($WORKFLOWTASK_PROGRESS_INTERVAL in every container that does not set it
	// itself); 0 leaves the reporters' default (1s).
	ProgressInterval time.Duration
	// IngestURL is, when the endpoint takes pushed progress (apiserver.Options.Ingest), the base
	// of the URL every task's pods push to: https://host[:port][/prefix], the task's
	// ingest.Path appended. Default: DefaultIngestURL of the operator's namespace.
	IngestURL string
	// IngestCAFile, when set, is a PEM file of the CAs that verify the ingest endpoint's
	// certificate, given to the pods (read again when it changes); empty: the CA bundle
	// ConfigMap the serving certificate's code publishes (--progress-cert-ca-bundle-configmap).
	IngestCAFile string
	// Notify names the sinks tasks' announcements are delivered to (controllers/notify).
	Notify notify.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{Enabled: true, Workers: 4, ProgressImage: "workflowtask-operator:dev",
		IngestURL: DefaultIngestURL(operatorNamespace())}
}

// AddFlags adds the options to fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.Enabled, "controllers", o.Enabled,
		"Run the WorkflowTask controller. False runs the progress endpoint alone (config/split: its own Deployment and ServiceAccount, which may only read tasks and review tokens and access).")
	fs.IntVar(&o.Workers, "workers", o.Workers, "How many tasks are reconciled at the same time.")
	fs.StringVar(&o.ProgressImage, "progress-image", o.ProgressImage,
		"Image of the progress-file sidecar for tasks that do not name one (it holds /workflowtask-progress).")
	fs.DurationVar(&o.ProgressInterval, "progress-interval", o.ProgressInterval,
		"Shortest time between two progress writes of each task's reporters, for the whole fleet (e.g. 1m for many thousands of busy tasks); "+
			"a task's container may set WORKFLOWTASK_PROGRESS_INTERVAL itself. 0: the reporters' default, 1s.")
	fs.StringVar(&o.IngestURL, "progress-ingest-url", o.IngestURL,
		"With --progress-ingest: base URL (https) of the operator's ingest endpoint that tasks' pods push their progress to; "+
			"each pod gets it with its task's path appended in WORKFLOWTASK_PROGRESS_URL. Default: the Service "+IngestServiceName+" in the operator's namespace ($POD_NAMESPACE).")
	o.Notify.AddFlags(fs)
	fs.StringVar(&o.IngestCAFile, "progress-ingest-ca-file", o.IngestCAFile,
		"With --progress-ingest: PEM file of the CAs that verify the ingest endpoint, given to tasks' pods in WORKFLOWTASK_PROGRESS_CA (read again when it changes). "+
			"Empty: the CA bundle ConfigMap the operator publishes (--progress-cert-ca-bundle-configmap), read from the API.")
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Workers < 1 {
		errs = append(errs, errors.New("--workers must be at least 1"))
	}
	if o.ProgressInterval < 0 {
		errs = append(errs, errors.New("--progress-interval must not be negative"))
	}
	if o.ProgressImage == "" {
		errs = append(errs, errors.New("--progress-image is empty"))
	}
	errs = append(errs, o.validateIngest()...)
	if _, err := o.Notify.Load(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
