package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestTTLRequeueAfter(t *testing.T) {
	finished := func(w *testutil.TaskWrapper, p workflowv1alpha1.TaskPhase) *testutil.TaskWrapper {
		w.Phase(p).Status.CompletionTime = ptr.To(metav1.NewTime(t0))
		return w
	}
	cases := map[string]struct {
		task *testutil.TaskWrapper
		now  time.Time
		want time.Duration
	}{
		"no ttl":              {task: finished(testutil.MakeTask("t", "ns"), workflowv1alpha1.TaskPhaseCompleted), now: t0, want: 0},
		"running task":        {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(10).Phase(workflowv1alpha1.TaskPhaseProcessing), now: t0, want: 0},
		"completed, 10s left": {task: finished(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), workflowv1alpha1.TaskPhaseCompleted), now: t0.Add(50 * time.Second), want: 10 * time.Second},
		"error counts too":    {task: finished(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), workflowv1alpha1.TaskPhaseError), now: t0, want: time.Minute},
		"canceled counts too": {task: finished(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), workflowv1alpha1.TaskPhaseCanceled), now: t0, want: time.Minute},
		"expired is floored":  {task: finished(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(0), workflowv1alpha1.TaskPhaseCompleted), now: t0.Add(time.Hour), want: minRequeueAfter},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ttlRequeueAfter(tc.task.Obj(), tc.now); got != tc.want {
				t.Errorf("ttlRequeueAfter = %s, want %s", got, tc.want)
			}
		})
	}
}
