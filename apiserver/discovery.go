package apiserver

import (
	"encoding/json"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The aggregated API: group progress.taskops.dev, version v1alpha1.
const (
	Group          = "progress.taskops.dev"
	Version        = "v1alpha1"
	aggregatedPath = "/apis/" + Group + "/" + Version
	discoveryPath  = aggregatedPath
)

// discovery is the APIResourceList of the aggregated API. It is the same for everyone, so it
// is served without authentication (the aggregator's availability check and discovery ask for
// it with identities that may not be able to see anything else).
var discovery = func() []byte {
	b, _ := json.Marshal(metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: Group + "/" + Version,
		APIResources: []metav1.APIResource{
			// GET .../progress/{id}: a task's progress by its short ID.
			{Name: "progress", SingularName: "progress", Namespaced: false, Kind: "Progress", Verbs: metav1.Verbs{"get"}},
			// GET .../namespaces/{ns}/tasks/{name}: a task's progress by namespace and name.
			{Name: "tasks", SingularName: "task", Namespaced: true, Kind: "TaskProgress", Verbs: metav1.Verbs{"get"}},
		},
	})
	return b
}()

func serveDiscovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(discovery)
}
