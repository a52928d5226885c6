package controllers

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	wtestutil "github.com/taskops/workflowtask-operator/internal/testutil"
)

func TestPhaseCollector(t *testing.T) {
	objs := []client.Object{
		wtestutil.MakeTask("a", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Obj(),
		wtestutil.MakeTask("b", "ns").Phase(workflowv1alpha1.TaskPhaseProcessing).Obj(),
		wtestutil.MakeTask("c", "other").Phase(workflowv1alpha1.TaskPhaseCompleted).Obj(),
		wtestutil.MakeTask("d", "ns").Obj(), // not reconciled yet
	}
	reader := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).Build()
	want := `
# HELP workflowtask_tasks Number of WorkflowTasks by phase (an empty phase: not yet reconciled).
# TYPE workflowtask_tasks gauge
workflowtask_tasks{phase=""} 1
workflowtask_tasks{phase="Canceled"} 0
workflowtask_tasks{phase="Completed"} 1
workflowtask_tasks{phase="Error"} 0
workflowtask_tasks{phase="Processing"} 2
workflowtask_tasks{phase="Queued"} 0
workflowtask_tasks{phase="Suspending"} 0
`
	if err := testutil.CollectAndCompare(NewPhaseCollector(reader), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
