package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// podReason says why a task's pod is not doing its work, in kubectl's words: a container
// waiting (ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, …) or terminated
// with an error (OOMKilled, Error and its exit code), or the pod unschedulable with the
// scheduler's reason; "" for a pod that is fine (running, succeeded, just created).
func podReason(p *corev1.Pod) string {
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return withMessage(fmt.Sprintf("container %s: %s", cs.Name, w.Reason), w.Message)
		}
	}
	for _, cs := range statuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return withMessage(fmt.Sprintf("container %s: %s (exit code %d)", cs.Name, t.Reason, t.ExitCode), t.Message)
		}
	}
	if p.Status.Phase == corev1.PodPending {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason != "" {
				return withMessage("Pending: "+c.Reason, c.Message)
			}
		}
	}
	return ""
}

func withMessage(s, msg string) string {
	if msg = strings.TrimSpace(msg); msg != "" {
		return s + ": " + msg
	}
	return s
}

// podRows are the message rows of a task's pods that are not doing their work, by pod name.
func podRows(task string, pods map[string]*corev1.Pod) []Row {
	names := make([]string, 0, len(pods))
	for n := range pods {
		names = append(names, n)
	}
	sort.Strings(names)
	var rows []Row
	for _, n := range names {
		if r := podReason(pods[n]); r != "" {
			rows = append(rows, Row{Key: task + "/pod/" + n, Kind: RowMessage, Task: task, Text: oneLine("pod " + n + ": " + r)})
		}
	}
	return rows
}

// watchPods sends the changes of the watched tasks' pods (those labelled with a task's name,
// selected by sel) until ctx ends; a user who may not read pods gets the tasks without them.
func (s *kubeSource) watchPods(ctx context.Context, sel string, events chan<- event) {
	var wait time.Duration
	for ctx.Err() == nil {
		list := &corev1.PodList{}
		raw := metav1.ListOptions{LabelSelector: sel}
		if err := s.c.List(ctx, list, client.InNamespace(s.namespace), &client.ListOptions{Raw: &raw}); err != nil {
			if apierrors.IsForbidden(err) || ctx.Err() != nil {
				return
			}
		} else {
			for i := range list.Items {
				if !send(ctx, events, event{pod: &list.Items[i]}) {
					return
				}
			}
			raw.ResourceVersion = list.ResourceVersion
			started := time.Now()
			if wi, err := s.c.Watch(ctx, &corev1.PodList{}, client.InNamespace(s.namespace), &client.ListOptions{Raw: &raw}); err == nil {
				if !drain(ctx, wi, events) {
					return
				}
			}
			if time.Since(started) >= shortWatch {
				wait = 0
			}
		}
		if wait = relistWait(0, wait); !sleep(ctx, wait) {
			return
		}
	}
}

// podTask is the key (namespace/name) of the task a pod belongs to; "" for none.
func podTask(p *corev1.Pod) string {
	name := p.Labels[workflowv1alpha1.LabelTaskName]
	if name == "" {
		return ""
	}
	return p.Namespace + "/" + name
}
