package controllers

import (
	"errors"
	"flag"
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
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{Enabled: true, Workers: 4, ProgressImage: "workflowtask-operator:dev"}
}

// AddFlags adds the options to fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.Enabled, "controllers", o.Enabled,
		"Run the WorkflowTask controller. False runs the progress endpoint alone (config/split: its own Deployment and ServiceAccount, which may only read tasks and review tokens and access).")
	fs.IntVar(&o.Workers, "workers", o.Workers, "How many tasks are reconciled at the same time.")
	fs.StringVar(&o.ProgressImage, "progress-image", o.ProgressImage,
		"Image of the progress-file sidecar for tasks that do not name one (it holds /workflowtask-progress).")
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if o.Workers < 1 {
		errs = append(errs, errors.New("--workers must be at least 1"))
	}
	if o.ProgressImage == "" {
		errs = append(errs, errors.New("--progress-image is empty"))
	}
	return errors.Join(errs...)
}
