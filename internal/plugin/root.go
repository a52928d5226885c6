// Package plugin is kubectl-workflowtask, the kubectl plugin for WorkflowTasks: get (a table
// with a bar per task), describe, a live multi-bar watch with rate and ETA, and cancel,
// suspend and resume. It reads tasks through the Kubernetes API with the user's kubeconfig
// (standard kubectl flags from k8s.io/cli-runtime); a user who may not read WorkflowTasks (a
// task's owner, a Cloudreve user) watches the progress endpoint's event stream instead.
package plugin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/project"
)

// Exit codes of the plugin. watch ends with the phase of the task(s) it followed; every
// other command exits 0 or ExitFailed, like kubectl.
const (
	// ExitCompleted: the watched task(s) completed (or the command succeeded).
	ExitCompleted = 0
	// ExitFailed: a watched task ended in Error (or the command failed).
	ExitFailed = 1
	// ExitCanceled: a watched task was canceled (and none failed).
	ExitCanceled = 2
	// ExitTimeout: --timeout passed before the watched task(s) finished.
	ExitTimeout = 3
	// ExitCannotWatch: watch could not follow the task: not found, not allowed, bad usage.
	ExitCannotWatch = 4
	// ExitInterrupted: the watch was interrupted (Ctrl-C, SIGTERM), as shells count 128+SIGINT.
	ExitInterrupted = 130
)

// exitError carries a watch's exit code out of cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// options are what every subcommand shares: the kubeconfig flags and the streams.
type options struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	now     func() time.Time
}

func (o *options) namespace() (string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return "", fmt.Errorf("%q is not a namespace: %s", ns, strings.Join(msgs, "; "))
	}
	return ns, nil
}

func (o *options) restConfig() (*rest.Config, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	return cfg, nil
}

func (o *options) client() (client.WithWatch, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: project.Scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	return c, nil
}

// validName refuses a task name (from the command line) that no task can have, before it goes
// into a request path or a field selector.
func validName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not a task name: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// clientIn is a client and the namespace the user works in (-n, else the kubeconfig's).
func (o *options) clientIn() (client.WithWatch, string, error) {
	ns, err := o.namespace()
	if err != nil {
		return nil, "", err
	}
	c, err := o.client()
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

// clientFor is clientIn for a command about the task named on its command line, refused
// before anything is sent when no task can have that name.
func (o *options) clientFor(name string) (client.WithWatch, string, error) {
	if err := validName(name); err != nil {
		return nil, "", err
	}
	return o.clientIn()
}

// NewCommand is `kubectl workflowtask` with its subcommands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use: "kubectl-workflowtask",
		// Usage and help say "kubectl workflowtask", as kubectl plugins do.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl workflowtask"},
		Short:       "Follow and control WorkflowTasks: live progress bars, rate and ETA",
		Long: `kubectl workflowtask shows WorkflowTasks (workflow.taskops.dev) and their progress:
a table with a bar per task, a live multi-bar view with rate and ETA, and cancel, suspend
and resume.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.flags.AddFlags(cmd.PersistentFlags())
	addVerbosityFlag(cmd)
	cmd.AddCommand(newGetCommand(o), newDescribeCommand(o), newWatchCommand(o),
		newActionCommand(o, cancelAction), newActionCommand(o, suspendAction), newActionCommand(o, resumeAction),
		newLogsCommand(o), newVersionCommand(o))
	// Shell completion (cobra's completion command, and __complete, which kubectl ≥ 1.26 runs
	// through kubectl_complete-workflowtask): task names for NAME, namespaces for -n.
	for _, sub := range cmd.Commands() {
		if strings.Contains(sub.Use, "NAME") {
			sub.ValidArgsFunction = o.completeTaskName
		}
	}
	_ = cmd.RegisterFlagCompletionFunc("namespace", o.completeNamespace) // the flag is ConfigFlags'
	return cmd
}

// Run runs the plugin with args (without the program name) and returns its exit code.
func Run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitCompleted
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(streams.ErrOut, "error:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(streams.ErrOut, "error:", err)
	return ExitFailed
}

// addVerbosityFlag adds kubectl's -v: klog's verbosity, which client-go's request logging
// follows (-v=6 each request, -v=8 with bodies, as kubectl).
func addVerbosityFlag(cmd *cobra.Command) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if v := fs.Lookup("v"); v != nil {
		pf := pflag.PFlagFromGoFlag(v)
		pf.Shorthand = "v"
		pf.Usage = "Log level: 6 shows each API request, 8 with bodies (as kubectl's -v)."
		cmd.PersistentFlags().AddFlag(pf)
	}
}
