package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/demowork"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// simulateAnnotation tells the kwok node to finish a pod (hack/local-cluster/kwok-stages.yaml).
const simulateAnnotation = "workflow.taskops.dev/simulate"

// demoWorker stands in for a task's container (kwok runs no containers): once the task's pod
// runs, it does real work on local files and reports progress through pkg/progress as the
// task's runner ServiceAccount, then marks the pod done, so the task's phase follows it.
type demoWorker struct {
	cluster *devcluster.Cluster
	cs      kubernetes.Interface
	dir     string
	log     func(format string, args ...any)
}

func (d *demoWorker) run(ctx context.Context, task *workflowv1alpha1.WorkflowTask) error {
	pod, err := d.waitForRunningPod(ctx, task)
	if err != nil {
		return err
	}
	// A token of the runner ServiceAccount bound to the pod, like the one the kubelet would mount.
	token, err := kubeauth.Token(ctx, d.cs, task.Namespace, task.Name+"-runner", kubeauth.TokenOptions{BoundTo: kubeauth.BoundToPod(pod)})
	if err != nil {
		return fmt.Errorf("runner token for %s: %w", task.Name, err)
	}
	r, err := progress.New(progress.Options{Config: d.cluster.TokenConfig(token), Namespace: task.Namespace,
		Task: task.Name, UID: task.UID, FieldManager: "workflowtask-progress/" + pod.Name})
	if err != nil {
		return err
	}
	d.log("%s: pod %s is running; working in %s", task.Name, pod.Name, filepath.Join(d.dir, task.Name))
	workErr := demowork.Work(ctx, task.Spec.Type, filepath.Join(d.dir, task.Name), r, 1)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		d.log("%s: %v", task.Name, err)
	}
	outcome := "complete"
	if workErr != nil {
		outcome = "fail"
		d.log("%s: the work failed: %v", task.Name, workErr)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, simulateAnnotation, outcome)
	if _, err := d.cs.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("marking pod %s %s: %w", pod.Name, outcome, err)
	}
	d.log("%s: done (%s)", task.Name, outcome)
	return nil
}

func (d *demoWorker) waitForRunningPod(ctx context.Context, task *workflowv1alpha1.WorkflowTask) (*corev1.Pod, error) {
	for {
		pods, err := d.cs.CoreV1().Pods(task.Namespace).List(ctx, metav1.ListOptions{LabelSelector: workflowv1alpha1.LabelTaskName + "=" + task.Name})
		if err == nil {
			for i := range pods.Items {
				if pods.Items[i].Status.Phase == corev1.PodRunning {
					return &pods.Items[i], nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
