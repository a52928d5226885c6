// Command localenv is what `make run` runs: a real local Kubernetes (hack/local-cluster.sh:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok as the node), the
// operator's manifests from config/ (config/local: config/default without the Deployment), the
// operator as its own process under its own ServiceAccount, the sample tasks, and a demo worker
// for each. It prints how to look, and on Ctrl-C stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/project"
)

func main() {
	manager := flag.String("manager", "bin/manager", "The manager binary.")
	keep := flag.Bool("keep-cluster", false, "Leave the cluster running on exit.")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // its clients' logs: nothing to show here
	if err := run(*manager, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

// pluginHint is the part of the printed instructions about the kubectl plugin (make build
// puts it in bin/).
func pluginHint(root string) string {
	return fmt.Sprintf(`
  # Live bars, rate and ETA with the kubectl plugin (docs/plugin.md); watch ends when every task
  # has finished, with an exit code for the phases:
  export PATH=%s:$PATH
  kubectl workflowtask watch -A
  kubectl workflowtask get -o wide
  kubectl workflowtask describe upload
`, filepath.Join(root, "bin"))
}

func say(format string, args ...any) {
	fmt.Printf("[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(managerBin string, keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := project.Root()
	if err != nil {
		return err
	}
	state := filepath.Join(root, ".local")
	if managerBin, err = filepath.Abs(managerBin); err != nil {
		return err
	}

	start := time.Now()
	mode, why := nodeMode()
	say("Node: %s — %s", mode, why)
	if mode == "real" {
		return runReal(ctx, root, state, keep, start)
	}
	say("Starting the local cluster (hack/local-cluster.sh up; the first run builds it)")
	cluster, err := devcluster.Up(ctx, root, filepath.Join(state, "cluster"), nil, os.Stderr)
	if err != nil {
		return err
	}
	if !keep {
		defer func() {
			say("Stopping the cluster")
			_ = cluster.Down(false)
		}()
	}
	say("Installing the CRD, RBAC, admission policy and APIService (kubectl apply -k config/local)")
	if err := cluster.InstallOperator(ctx); err != nil {
		return err
	}
	logPath := filepath.Join(state, "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	say("Starting the operator (controller + progress endpoint on https://127.0.0.1:9443; log: %s)", logPath)
	mgr, err := cluster.StartManager(ctx, devcluster.ManagerOptions{Binary: managerBin, Log: logFile})
	if err != nil {
		return err
	}
	defer func() {
		say("Stopping the operator")
		mgr.Stop()
	}()

	// Demo users: the samples' owners are these ServiceAccounts.
	tokens, err := progressTokens(ctx, cluster)
	if err != nil {
		return err
	}
	// A previous run's tasks are still in the cluster's data: start the demo afresh. Foreground
	// deletion waits until their Jobs are gone too, so the new tasks' Jobs can take the names.
	if _, err := cluster.Kubectl(ctx, "delete", "-f", "config/samples/", "--ignore-not-found",
		"--cascade=foreground", "--wait=true", "--timeout=120s"); err != nil {
		return err
	}
	say("Creating the sample tasks (kubectl apply -f config/samples/)")
	c, tasks, err := applySamples(ctx, cluster, "config/samples/")
	if err != nil {
		return err
	}

	cs, err := kubernetes.NewForConfig(cluster.Admin)
	if err != nil {
		return err
	}
	worker := &demoWorker{cluster: cluster, cs: cs, dir: filepath.Join(state, "demo"), log: say}
	var wg sync.WaitGroup
	for i := range tasks {
		wg.Go(func() {
			if err := worker.run(ctx, &tasks[i]); err != nil && ctx.Err() == nil {
				say("%s: %v", tasks[i].Name, err)
			}
		})
	}

	var upload workflowv1alpha1.WorkflowTask
	for _, t := range tasks {
		if t.Name == "upload" {
			upload = t
		}
	}
	id := upload.Status.ID
	caFile := filepath.Join(state, "progress-ca.crt")
	fmt.Printf(`
Everything is running (%.0f s). The demo workers stand in for the pods' containers (kwok runs
none): they copy, index, archive, extract, move and download real files under %s,
report progress as each task's runner, and then mark the pod done.

In another terminal:

  export KUBECONFIG=%s
  kubectl get workflowtasks -A -w
%s
  # The progress endpoint, verified with the operator's CA bundle (the ConfigMap any
  # authenticated user may read; its certificate here is also for localhost):
  kubectl get configmap -n workflowtask-system workflowtask-progress-ca-bundle -o jsonpath='{.data.ca\.crt}' >%s
  export CACERT=%s
  # As alice (the owner of task "upload", ID %s), with a token for the endpoint's audience only
  # (kube-apiserver refuses it; one for kube-apiserver is refused here):
  export TOKEN=%s  # kubectl create token alice --audience=%s
  curl -s --cacert $CACERT -H "Authorization: Bearer $TOKEN" https://localhost:9443/workflow/progress/%s
  curl -s --cacert $CACERT -H "Authorization: Bearer $TOKEN" https://localhost:9443/api/v4/workflow/progress/%s
  # Live, as server-sent events (Ctrl-C ends it):
  curl -sN --cacert $CACERT -H "Authorization: Bearer $TOKEN" -H "Accept: text/event-stream" https://localhost:9443/workflow/progress/%s

  # As bob, who does not own it: {"data":{},"code":0,"msg":""}
  curl -s --cacert $CACERT -H "Authorization: Bearer %s" https://localhost:9443/workflow/progress/%s

  # Through the aggregation layer (you are cluster-admin here):
  kubectl get --raw /apis/progress.taskops.dev/v1alpha1/progress/%s
  kubectl get --raw /apis/progress.taskops.dev/v1alpha1/namespaces/default/tasks/upload

  kubectl describe workflowtask upload

Ctrl-C stops the operator and the cluster.
`, time.Since(start).Seconds(), filepath.Join(state, "demo"), cluster.Kubeconfig, pluginHint(root), caFile, caFile, id, tokens["alice"], apiserver.TokenAudience,
		id, id, id, tokens["bob"], id, id)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		// The pods are marked done; the Job controller and the operator follow within seconds.
		for ctx.Err() == nil && !allFinished(ctx, c) {
			time.Sleep(250 * time.Millisecond)
		}
		say("All demo tasks finished (kubectl get workflowtasks shows them Completed). Ctrl-C stops everything.")
		<-ctx.Done()
	case <-ctx.Done():
	}
	return nil
}

// progressTokens are the demo users' tokens for the progress endpoint (its audience, which the
// manager accepts alone), valid for a day.
func progressTokens(ctx context.Context, cluster *devcluster.Cluster) (map[string]string, error) {
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		t, err := cluster.ProgressToken(ctx, "default", u, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		tokens[u] = t
	}
	return tokens, nil
}

// applySamples applies the sample manifests in dir and waits until every task has its ID.
func applySamples(ctx context.Context, cluster *devcluster.Cluster, dir string) (client.Client, []workflowv1alpha1.WorkflowTask, error) {
	if _, err := cluster.Kubectl(ctx, "apply", "-f", dir); err != nil {
		return nil, nil, err
	}
	c, err := client.New(cluster.Admin, client.Options{Scheme: project.Scheme})
	if err != nil {
		return nil, nil, err
	}
	tasks, err := waitForIDs(ctx, c)
	return c, tasks, err
}

// allFinished reports whether every sample task reached a terminal phase.
func allFinished(ctx context.Context, c client.Client) bool {
	var list workflowv1alpha1.WorkflowTaskList
	if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
		return false
	}
	for _, t := range list.Items {
		if !t.Status.Phase.IsFinished() {
			return false
		}
	}
	return true
}

// waitForIDs waits until every sample task has its ID.
func waitForIDs(ctx context.Context, c client.Client) ([]workflowv1alpha1.WorkflowTask, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list workflowv1alpha1.WorkflowTaskList
		if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
			return nil, err
		}
		ready := len(list.Items) > 0
		var missing []string
		for _, t := range list.Items {
			if t.Status.ID == "" {
				ready = false
				missing = append(missing, t.Name)
			}
		}
		if ready {
			return list.Items, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tasks without an ID after 60 s: %s", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
