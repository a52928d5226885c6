// Command workflowtask-progress reports a WorkflowTask's progress from a job that is not
// written in Go. In a task's pod it needs no configuration: the controller injects the task's
// identity and either the operator's push target (WORKFLOWTASK_PROGRESS_URL, its CA and the
// pod's projected token: the operator takes pushes and writes the status) or nothing more (the
// pod runs as the task's runner and writes the status itself).
//
//	workflowtask-progress set TYPE CURRENT[/TOTAL] [IDENTIFIER]   set one entry and exit
//	workflowtask-progress add TYPE DELTA                          add to one entry and exit
//	workflowtask-progress delete TYPE                             delete one entry and exit
//	workflowtask-progress file PATH                               follow a progress file
//
// In file mode each appended line is one update (see progress.ParseLine: "TYPE CUR/TOTAL
// [IDENTIFIER]", "TYPE CUR", "delete TYPE", or a JSON object); malformed lines are reported on
// stderr with their line number and skipped. Updates are written at most once per --interval.
// SIGTERM (the end of the pod) makes it read what is left, write it, and exit.
//
// Every write is made only if the task is still the one with --uid ($WORKFLOWTASK_UID in a
// task's pod; when empty, the UID the first read finds): a pod of a deleted task never writes
// into a new task of the same name, it exits 1 saying so.
//
// Exit codes: 0 written; 1 not written (API refused, unreachable, deadline, or the task was
// deleted and re-created); 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

const (
	exitOK       = 0
	exitNotSaved = 1
	exitUsage    = 2
)

type options struct {
	task, namespace, kubeconfig, fieldManager string
	// uid is the task's UID every write is conditioned on; when empty, the first read pins it.
	uid               types.UID
	interval, timeout time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("workflowtask-progress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.task, "task", os.Getenv(workflowv1alpha1.EnvTaskName), "Task name (default $"+workflowv1alpha1.EnvTaskName+").")
	fs.StringVar(&o.namespace, "namespace", os.Getenv(workflowv1alpha1.EnvTaskNamespace), "Task namespace (default $"+workflowv1alpha1.EnvTaskNamespace+").")
	fs.Func("uid", "Task UID (default $"+workflowv1alpha1.EnvTaskUID+"): nothing is written unless the task has it; when empty, the task's UID as first read.",
		func(v string) error { o.uid = types.UID(v); return nil })
	o.uid = types.UID(os.Getenv(workflowv1alpha1.EnvTaskUID))
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "Kubeconfig file; in-cluster config when empty.")
	fs.StringVar(&o.fieldManager, "field-manager", "", "Field manager name (default workflowtask-progress/<pod>/file, or /<TYPE> for one entry).")
	interval, err := progress.IntervalFromEnvironment()
	if err != nil {
		fmt.Fprintln(stderr, "workflowtask-progress:", err)
		return exitUsage
	}
	fs.DurationVar(&o.interval, "interval", interval, "File mode: shortest time between two writes (default $"+workflowv1alpha1.EnvProgressInterval+", else 1s).")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "How long a one-entry command, or the final write of file mode, may try.")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: workflowtask-progress [flags] set TYPE CURRENT[/TOTAL] [IDENTIFIER] | add TYPE DELTA | delete TYPE | file PATH")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	usage := func(msg string) int {
		fmt.Fprintln(stderr, "workflowtask-progress:", msg)
		fs.Usage()
		return exitUsage
	}
	words := fs.Args()
	if len(words) == 0 {
		return usage("a command is required")
	}
	if o.task == "" || o.namespace == "" {
		return usage("--task and --namespace (or " + workflowv1alpha1.EnvTaskName + " and " + workflowv1alpha1.EnvTaskNamespace + ") are required")
	}
	target, err := o.target()
	if err != nil {
		fmt.Fprintln(stderr, "workflowtask-progress:", err)
		return exitNotSaved
	}

	cmd, cmdArgs := words[0], words[1:]
	var (
		u      progress.Update
		parseE error
	)
	switch cmd {
	case "file":
		if len(cmdArgs) != 1 {
			return usage("file takes one PATH")
		}
		return followFile(target, o, cmdArgs[0], stderr)
	case "set":
		if len(cmdArgs) < 2 {
			return usage("set takes TYPE CURRENT[/TOTAL] [IDENTIFIER]")
		}
		u, parseE = parseOne(cmdArgs)
	case "add":
		if len(cmdArgs) != 2 {
			return usage("add takes TYPE DELTA")
		}
		if _, err := strconv.ParseInt(cmdArgs[1], 10, 64); err != nil || !progress.ValidType(cmdArgs[0]) {
			return usage(fmt.Sprintf("add takes a valid TYPE and a whole-number DELTA, got %q %q", cmdArgs[0], cmdArgs[1]))
		}
		return withTimeout(o, func(ctx context.Context) error { return addOne(ctx, target, o, cmdArgs[0], cmdArgs[1]) }, stderr)
	case "delete":
		if len(cmdArgs) != 1 {
			return usage("delete takes TYPE")
		}
		u, parseE = parseOne([]string{"delete", cmdArgs[0]})
	default:
		return usage(fmt.Sprintf("unknown command %q", cmd))
	}
	if parseE != nil {
		return usage(parseE.Error())
	}
	return withTimeout(o, func(ctx context.Context) error { return writeOne(ctx, target, o, u) }, stderr)
}

// target is where the commands write: with --kubeconfig (or $KUBECONFIG), the status through
// it; else the ingest target the controller injected ($WORKFLOWTASK_PROGRESS_URL…), else the
// in-cluster config.
func (o options) target() (progress.Options, error) {
	var target progress.Options
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return target, fmt.Errorf("loading kubeconfig %s: %w", o.kubeconfig, err)
		}
		target.Config = cfg
		return target, nil
	}
	return target, progress.TargetFromEnvironment(&target)
}

func withTimeout(o options, f func(context.Context) error, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		fmt.Fprintln(stderr, "workflowtask-progress:", err)
		return exitNotSaved
	}
	return exitOK
}

// parseOne turns command-line words into an update, with the file format's rules.
func parseOne(words []string) (progress.Update, error) {
	line := words[0]
	for _, w := range words[1:] {
		line += " " + w
	}
	u, ok, err := progress.ParseLine(line)
	if err == nil && !ok {
		err = errors.New("nothing to do")
	}
	return u, err
}

// followFile reports a progress file continuously until SIGTERM or SIGINT.
func followFile(target progress.Options, o options, path string, stderr io.Writer) int {
	fm := o.fieldManager
	if fm == "" {
		fm = progress.DefaultFieldManager("file")
	}
	// Write failures (one line per spell of failures) and a replaced task show on stderr as
	// they happen, not only at exit.
	logger := funcr.New(func(prefix, args string) { fmt.Fprintln(stderr, "workflowtask-progress:", prefix, args) }, funcr.Options{})
	target.Namespace, target.Task, target.UID, target.FieldManager = o.namespace, o.task, o.uid, fm
	target.Interval, target.Logger = o.interval, logger
	r, err := progress.New(target)
	if err != nil {
		fmt.Fprintln(stderr, "workflowtask-progress:", err)
		return exitNotSaved
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	follow(ctx, path, r, stderr, 100*time.Millisecond)

	closeCtx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		if errors.Is(err, progress.ErrTaskReplaced) {
			fmt.Fprintf(stderr, "workflowtask-progress: %s\n", replacedMessage(o, err.Error()))
			return exitNotSaved
		}
		fmt.Fprintln(stderr, "workflowtask-progress:", err)
		return exitNotSaved
	}
	return exitOK
}
