// Command localenv is what `make run` runs: it starts a real control plane (etcd and
// kube-apiserver built from Go modules), installs the CRD and the sample tasks, runs the
// manager binary against it, prints how to look at it, and stops everything on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/taskops/workflowtask-operator/internal/testenv"
)

func main() {
	manager := flag.String("manager", "bin/manager", "The manager binary to run.")
	stateDir := flag.String("state-dir", ".local", "Where the kubeconfig is written.")
	flag.Parse()
	if err := run(*manager, *stateDir); err != nil {
		fmt.Fprintln(os.Stderr, "localenv:", err)
		os.Exit(1)
	}
}

func run(manager, stateDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env, cfg, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()

	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", stateDir, err)
	}
	kubeconfig, err := filepath.Abs(filepath.Join(stateDir, "kubeconfig"))
	if err != nil {
		return fmt.Errorf("resolving the kubeconfig path: %w", err)
	}
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", kubeconfig, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := applySamples(ctx, c); err != nil {
		return err
	}

	cmd := exec.CommandContext(ctx, manager, "--kubeconfig", kubeconfig,
		"--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", manager, err)
	}
	fmt.Printf(`
The control plane and the operator are running. In another terminal:

  export KUBECONFIG=%s
  kubectl get workflowtasks -A -w

Ctrl-C stops everything.
`, kubeconfig)
	if err := cmd.Wait(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("manager exited: %w", err)
	}
	return nil
}

// applySamples server-side applies every task of config/samples.
func applySamples(ctx context.Context, c client.Client) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "workflow_*.yaml"))
	if err != nil || len(files) == 0 {
		return errors.Join(errors.New("no samples in config/samples"), err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading %s: %w", f, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &u.Object); err != nil {
			return fmt.Errorf("parsing %s: %w", f, err)
		}
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("make-run"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	return nil
}
