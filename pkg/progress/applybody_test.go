package progress

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

func TestApplyBody(t *testing.T) {
	at := metav1.NewMicroTime(time.Date(2026, 11, 29, 12, 0, 0, 5000, time.UTC))
	for name, c := range map[string]struct {
		uid, rv string
		entries []workflowv1alpha1.ProgressEntry
		want    string
	}{
		"no entries: the writer's are released": {want: `{"apiVersion":"workflow.taskops.dev/v1alpha1","kind":"WorkflowTask","metadata":{"name":"t","namespace":"ns"},"status":{"progress":[]}}`},
		"conditioned on a resourceVersion, for a UID": {uid: "u-1", rv: "42",
			entries: []workflowv1alpha1.ProgressEntry{{Type: "upload", Current: 0, Total: 0, UpdateTime: &at}, {Type: "upload_single_0", Current: 1, Total: 2, Identifier: "/a"}},
			want: `{"apiVersion":"workflow.taskops.dev/v1alpha1","kind":"WorkflowTask","metadata":{"name":"t","namespace":"ns","uid":"u-1","resourceVersion":"42"},` +
				`"status":{"progress":[{"type":"upload","current":0,"total":0,"updateTime":"2026-11-29T12:00:00.000005Z"},{"type":"upload_single_0","current":1,"total":2,"identifier":"/a"}]}}`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ApplyBody("ns", "t", types.UID(c.uid), c.rv, c.entries)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}
