package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func terminated(name string, code int32, reason string, at time.Time) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Reason: reason, FinishedAt: metav1.NewTime(at)}}}
}

func podWith(statuses ...corev1.ContainerStatus) corev1.Pod {
	return corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: statuses}}
}

func TestContainerFailure(t *testing.T) {
	t0 := testutil.T0
	for name, c := range map[string]struct {
		pods []corev1.Pod
		want string
	}{
		"no pods":          {want: ""},
		"all succeeded":    {pods: []corev1.Pod{podWith(terminated("worker", 0, "Completed", t0))}, want: ""},
		"one failed":       {pods: []corev1.Pod{podWith(terminated("worker", 3, "Error", t0))}, want: "container worker exited with code 3 (Error)"},
		"the last attempt": {pods: []corev1.Pod{podWith(terminated("worker", 3, "Error", t0)), podWith(terminated("worker", 137, "OOMKilled", t0.Add(time.Minute)))}, want: "container worker exited with code 137 (OOMKilled)"},
		"a sidecar ok, the worker failed": {pods: []corev1.Pod{podWith(terminated("progress", 0, "Completed", t0.Add(time.Second)), terminated("worker", 2, "", t0))},
			want: "container worker exited with code 2"},
		"restarted: the last termination": {pods: []corev1.Pod{{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "worker",
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", FinishedAt: metav1.NewTime(t0)}}}}}}},
			want: "container worker exited with code 1 (Error)"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := containerFailure(c.pods); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// The Failed condition names the container's exit code when it is known.
func TestFailedMessageNamesTheExitCode(t *testing.T) {
	task := testutil.MakeTask("t", "ns").Obj()
	obs := jobObservation{job: testutil.MakeJob("t", "ns").Condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit").Obj(),
		failure: "container worker exited with code 3 (Error)"}
	status, _ := compute(task, started, obs, t0)
	c := meta.FindStatusCondition(status.Conditions, workflowv1alpha1.ConditionFailed)
	if want := "Job t failed: Job has reached the specified backoff limit; container worker exited with code 3 (Error)"; c == nil || c.Message != want {
		t.Errorf("Failed = %+v, want message %q", c, want)
	}
}
