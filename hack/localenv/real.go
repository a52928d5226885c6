package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/image"
)

// The operator's namespace (the installer's), and the host of the push URL its controller gives
// tasks' pods: the ingest Service's name.
const operatorNamespace = "workflowtask-system"

var ingestHost = strings.TrimPrefix(controllers.DefaultIngestURL(operatorNamespace), "https://")

// The images make run builds for a real node (this platform only).
const (
	localOperatorImage = "workflowtask-operator:local"
	localWorkerImage   = "workflowtask-demo-worker:local"
)

// nodeMode is "real" or "kwok": $NODE when set, else real where a real node can run.
func nodeMode() (mode, why string) {
	can, why := devcluster.CanRunRealNode()
	switch os.Getenv("NODE") {
	case "real":
		return "real", "NODE=real"
	case "kwok":
		return "kwok", "NODE=kwok"
	}
	if can {
		return "real", why + " (NODE=kwok for the simulated node)"
	}
	return "kwok", why + ": a simulated node (a real one needs Linux and root)"
}

// buildImages builds the operator, worker and pause images for this platform into dir.
func buildImages(ctx context.Context, root, dir string) error {
	for _, b := range []struct {
		spec image.Spec
		ref  string
	}{{image.Operator, localOperatorImage}, {image.Worker, localWorkerImage}, {image.Pause, "pause:dev"}} {
		idx, err := image.Build(ctx, image.Options{Spec: b.spec, Root: root, Platforms: []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}})
		if err != nil {
			return err
		}
		if _, err := image.Write(filepath.Join(dir, b.spec.Name), b.ref, idx); err != nil {
			return err
		}
	}
	return nil
}

// runReal is make run on a real node: the operator installed from its one-file installer and
// running as its Deployment, the sample tasks running the sample worker's image.
func runReal(ctx context.Context, root, state string, keep bool, start time.Time) error {
	images := filepath.Join(state, "images")
	say("Building the images (operator, sample worker, pod sandbox) for this platform")
	if err := buildImages(ctx, root, images); err != nil {
		return err
	}
	say("Starting the local cluster (hack/local-cluster.sh up) and joining a real node (hack/real-node.sh up: kubelet, containerd, runc)")
	cluster, err := devcluster.Up(ctx, root, filepath.Join(state, "cluster-real"), []string{"LOCAL_CLUSTER_AGGREGATOR_ROUTING=true"}, os.Stderr)
	if err != nil {
		return err
	}
	if !keep {
		defer func() {
			say("Stopping the cluster")
			_ = cluster.Down(false)
		}()
	}
	if err := cluster.RealNodeUp(ctx, images); err != nil {
		return err
	}
	if !keep {
		defer func() {
			say("Stopping the real node and undoing its changes to the host")
			stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_ = cluster.RealNodeDown(stopCtx)
			if err := cluster.RealNodeCheck(stopCtx); err != nil {
				say("The host differs from before: %v", err)
			}
		}()
	}
	installer := filepath.Join(state, "install.yaml")
	say("Installing the operator from its one-file installer (%s, image %s) and waiting for its Deployment", installer, localOperatorImage)
	build := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-installer.sh"))
	build.Env = append(os.Environ(), "IMG="+localOperatorImage, "INSTALLER="+installer)
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build-installer: %w\n%s", err, out)
	}
	for _, args := range [][]string{
		{"apply", "--server-side", "--force-conflicts", "-f", installer},
		{"wait", "-n", operatorNamespace, "--for=condition=Available", "deployment/workflowtask-controller-manager", "--timeout=180s"},
		{"wait", "--for=condition=Available", "apiservice/v1alpha1.progress.taskops.dev", "--timeout=120s"},
	} {
		if _, err := cluster.Kubectl(ctx, args...); err != nil {
			return err
		}
	}
	tokens, err := progressTokens(ctx, cluster)
	if err != nil {
		return err
	}
	// The installer's operator takes pushed progress (--progress-ingest): tasks' pods push to its
	// ingest Service, which nothing on this node routes (no kube-proxy) or names (no cluster DNS).
	say("Routing the ingest Service %s/%s to the leader's pod as kube-proxy would (hack/real-node.sh route, following its EndpointSlices)",
		operatorNamespace, controllers.IngestServiceName)
	routeCtx, stopRoute := context.WithCancel(ctx)
	route, err := cluster.RouteService(routeCtx, operatorNamespace, controllers.IngestServiceName, "")
	defer func() { // before the node goes down: the route's last run must not race its removal
		stopRoute()
		if route != nil {
			<-route.Done
		}
	}()
	if err != nil {
		return err
	}
	samples, err := devcluster.RealSamples(root, filepath.Join(state, "samples-real"), "docker.io/library/"+localWorkerImage,
		route.HostAliases(ingestHost))
	if err != nil {
		return err
	}
	if _, err := cluster.Kubectl(ctx, "delete", "-f", samples, "--ignore-not-found", "--cascade=foreground", "--wait=true", "--timeout=120s"); err != nil {
		return err
	}
	say("Creating the sample tasks: config/samples/ with the sample worker's image in their pods, and hostAliases mapping %s to the ingest Service's ClusterIP %s (the node has no cluster DNS)",
		ingestHost, route.ClusterIP)
	c, tasks, err := applySamples(ctx, cluster, samples)
	if err != nil {
		return err
	}
	id := ""
	for _, t := range tasks {
		if t.Name == "upload" {
			id = t.Status.ID
		}
	}
	podIP, err := cluster.Kubectl(ctx, "get", "pods", "-n", operatorNamespace, "-l", "control-plane=controller-manager",
		"-o", "jsonpath={.items[0].status.podIP}")
	if err != nil {
		return err
	}
	// The pod's certificate is for the Service's names, not its address: curl --resolve.
	const progressService = "workflowtask-progress.workflowtask-system.svc"
	podAddr := strings.TrimSpace(string(podIP))
	endpoint := "https://" + progressService + ":9443"
	caFile := filepath.Join(state, "progress-ca.crt")
	fmt.Printf(`
Everything is running on a real node (%.0f s): the operator runs as its Deployment, each task's
pod runs the sample worker's image, doing real file work in an emptyDir and pushing its progress
with the pod's projected token (it has no API token) to the operator's ingest Service, which
writes it to the task's status (field manager %s).
The node has no kube-proxy and no cluster DNS: make run routes the ingest Service's ClusterIP to
the leader's pod (hack/real-node.sh route, following the Service's EndpointSlices), and each
sample's pod template maps the Service's name to it in hostAliases:
  %s -> %s

In another terminal:

  export KUBECONFIG=%s
  kubectl get workflowtasks -A -w
  kubectl get pods -o wide                        # on the real node
  kubectl logs -l workflow.taskops.dev/task-name=upload -c worker
  kubectl get workflowtask upload --show-managed-fields -o yaml   # status.progress written by %s
  iptables -t nat -L WFT-SERVICES -v -n   # the route: pods' connections to %s
%s
  # The progress endpoint (the operator's pod, by its Service's name), verified with the
  # operator's CA bundle (the ConfigMap any authenticated user may read):
  kubectl get configmap -n workflowtask-system workflowtask-progress-ca-bundle -o jsonpath='{.data.ca\.crt}' >%s
  export CURL_TLS="--cacert %s --resolve %s:9443:%s"
  # As alice (the owner of task "upload", ID %s), with a token for the endpoint's audience only:
  export TOKEN=%s  # kubectl create token alice --audience=%s
  curl -s $CURL_TLS -H "Authorization: Bearer $TOKEN" %s/workflow/progress/%s
  # Live, as server-sent events (Ctrl-C ends it):
  curl -sN $CURL_TLS -H "Authorization: Bearer $TOKEN" -H "Accept: text/event-stream" %s/workflow/progress/%s

  # Through the aggregation layer (you are cluster-admin here):
  kubectl get --raw /apis/progress.taskops.dev/v1alpha1/namespaces/default/tasks/upload

Ctrl-C stops the operator, the node (undoing its changes to the host) and the cluster.
`, time.Since(start).Seconds(), apiserver.IngestFieldManager, ingestHost, route.ClusterIP, cluster.Kubeconfig,
		apiserver.IngestFieldManager, route.Address, pluginHint(root), caFile, caFile, progressService, podAddr, id, tokens["alice"], apiserver.TokenAudience, endpoint, id, endpoint, id)
	for ctx.Err() == nil && !allFinished(ctx, c) {
		time.Sleep(250 * time.Millisecond)
	}
	if ctx.Err() == nil {
		say("All sample tasks finished (kubectl get workflowtasks shows them Completed). Ctrl-C stops everything.")
		<-ctx.Done()
	}
	return nil
}
