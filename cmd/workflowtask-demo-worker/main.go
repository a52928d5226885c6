// Command workflowtask-demo-worker is the sample tasks' worker as a program for a real
// container: it does its task type's file work (internal/demowork) in a directory — an emptyDir
// in a pod — and reports progress through pkg/progress as the pod's runner identity (the
// WORKFLOWTASK_* variables the operator injects and the projected ServiceAccount token; outside
// a pod, KUBECONFIG), or pushes it to the operator when the operator injected its ingest
// endpoint (WORKFLOWTASK_PROGRESS_URL …). It exits 0 once the work is done and its final progress
// written; 1 when the work or the final write failed; --exit-code N ends it with N after the work
// (a failing container, for retries and backoffLimit). With --receive-events it is instead a
// sample CloudEvents sink for the operator's notifications.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/demowork"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

func main() {
	typ := flag.String("type", "", "The task type whose work to do (upload, import, create_archive, extract_archive, relocate, remote_download, …).")
	dir := flag.String("dir", "/work", "Directory to work in (emptied first).")
	pace := flag.Float64("pace", 1, "Scale of the deliberate delays: 1 the demo's pace, 0 as fast as possible.")
	exitCode := flag.Int("exit-code", 0, "Exit with this code after the work (not 0: a failing container).")
	toFile := flag.Bool("progress-file", false,
		"Write progress lines to $WORKFLOWTASK_PROGRESS_FILE for the progress-file sidecar instead of the API: count up once per second×pace until SIGTERM, then write a last line (identifier \"terminated\").")
	probe := flag.String("probe", "", "Only try a TCP connection to this host:port (3 s) and exit 0 when it opens, 1 when not: what a pod can reach.")
	directCA := flag.String("try-direct-write", "",
		"After the work and its final progress, also try to write the task's status on kube-apiserver directly (verified with this CA file), without credentials and with the ingest token, and print each HTTP status: in ingest mode a task's pods have no API rights. It does not change the exit code.")
	receive := flag.String("receive-events", "",
		"Only serve a CloudEvents webhook on this address (e.g. :8080) and print every event received as a JSON line: the sample sink of the operator's notifications.")
	flag.Parse()
	if *receive != "" {
		os.Exit(receiveEvents(*receive))
	}
	if *probe != "" {
		os.Exit(probeTCP(*probe))
	}
	if *toFile {
		os.Exit(countToFile(*typ, *pace))
	}
	os.Exit(run(*typ, *dir, *pace, *exitCode, *directCA))
}

// countToFile writes "<typ> N/100" lines to the progress file, one per second×pace, until
// SIGTERM (the pod ends: canceled, deleted), then "<typ> N/100 terminated" and exits 0; at 100 it
// exits 0 too. The native sidecar forwards the lines, its final write the last one.
func countToFile(typ string, pace float64) int {
	path := os.Getenv(workflowv1alpha1.EnvProgressFile)
	if typ == "" || path == "" || pace <= 0 {
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker: --progress-file needs --type, $"+workflowv1alpha1.EnvProgressFile+" and a positive --pace")
		return 2
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker:", err)
		return 1
	}
	defer func() { _ = f.Close() }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	tick := time.NewTicker(time.Duration(pace * float64(time.Second)))
	defer tick.Stop()
	for n := 0; n <= 100; n++ {
		if _, err := fmt.Fprintf(f, "%s %d/100\n", typ, n); err != nil {
			fmt.Fprintln(os.Stderr, "workflowtask-demo-worker:", err)
			return 1
		}
		select {
		case <-ctx.Done():
			_, err := fmt.Fprintf(f, "%s %d/100 terminated\n", typ, n)
			fmt.Printf("workflowtask-demo-worker: terminated at %d/100\n", n)
			if err != nil {
				return 1
			}
			return 0
		case <-tick.C:
		}
	}
	return 0
}

func run(typ, dir string, pace float64, exitCode int, directCA string) int {
	if typ == "" || pace < 0 || exitCode < 0 || exitCode > 255 {
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker: --type is required; --pace must not be negative; --exit-code is 0..255")
		return 2
	}
	// SIGTERM (the pod ends, the task is canceled): stop the work, still write the final state.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	r, err := progress.NewFromEnvironment(progress.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker:", err)
		return 1
	}
	fmt.Printf("workflowtask-demo-worker: %s work in %s\n", typ, dir)
	workErr := demowork.Work(ctx, workflowv1alpha1.TaskType(typ), dir, r, pace)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closeErr := r.Close(closeCtx)
	switch {
	case workErr != nil:
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker: the work failed:", workErr)
		return 1
	case closeErr != nil:
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker:", closeErr)
		return 1
	}
	fmt.Printf("workflowtask-demo-worker: done; progress %v\n", r.Values())
	if directCA != "" {
		directCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		tryDirectWrites(directCtx, directCA)
	}
	return exitCode
}

// probeTCP tries one TCP connection and says what happened.
func probeTCP(addr string) int {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		fmt.Printf("workflowtask-demo-worker: %s not reachable: %v\n", addr, err)
		return 1
	}
	_ = conn.Close()
	fmt.Printf("workflowtask-demo-worker: %s reachable\n", addr)
	return 0
}
