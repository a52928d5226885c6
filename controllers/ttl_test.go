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
	finished := func(p workflowv1alpha1.TaskPhase) taskRecord {
		return taskRecord{JobCreated: true, Phase: p, Reason: string(p), CompletionTime: ptr.To(metav1.NewTime(t0))}
	}
	// What a pod may have written into the status: a finished phase long ago. Never counted.
	forged := func(w *testutil.TaskWrapper) *testutil.TaskWrapper {
		w.Phase(workflowv1alpha1.TaskPhaseCompleted).Status.CompletionTime = ptr.To(metav1.NewTime(t0.AddDate(-26, 0, 0)))
		return w
	}
	cases := map[string]struct {
		task *testutil.TaskWrapper
		rec  taskRecord
		now  time.Time
		want time.Duration
	}{
		"no ttl":                  {task: testutil.MakeTask("t", "ns"), rec: finished(workflowv1alpha1.TaskPhaseCompleted), now: t0, want: 0},
		"running task":            {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(10), rec: started, now: t0, want: 0},
		"completed, 10s left":     {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), rec: finished(workflowv1alpha1.TaskPhaseCompleted), now: t0.Add(50 * time.Second), want: 10 * time.Second},
		"error counts too":        {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), rec: finished(workflowv1alpha1.TaskPhaseError), now: t0, want: time.Minute},
		"canceled counts too":     {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60), rec: finished(workflowv1alpha1.TaskPhaseCanceled), now: t0, want: time.Minute},
		"expired is floored":      {task: testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(0), rec: finished(workflowv1alpha1.TaskPhaseCompleted), now: t0.Add(time.Hour), want: minRequeueAfter},
		"forged status, running":  {task: forged(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(0)), rec: started, now: t0, want: 0},
		"forged status, finished": {task: forged(testutil.MakeTask("t", "ns").TTLSecondsAfterFinished(60)), rec: finished(workflowv1alpha1.TaskPhaseCompleted), now: t0, want: time.Minute},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ttlRequeueAfter(tc.task.Obj(), tc.rec, tc.now); got != tc.want {
				t.Errorf("ttlRequeueAfter = %s, want %s", got, tc.want)
			}
		})
	}
}
