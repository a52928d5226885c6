package controllers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// cachedPerTask are the objects the manager caches for one running task, as kube-apiserver
// served them in the scale harness (test/scale, -scale.profile keeps such files): the task,
// its Job, and its runner ServiceAccount, Role and RoleBinding.
var cachedPerTask = []struct {
	file string
	new  func() client.Object
}{
	{"workflowtask.json", func() client.Object { return &workflowv1alpha1.WorkflowTask{} }},
	{"job.json", func() client.Object { return &batchv1.Job{} }},
	{"serviceaccount.json", func() client.Object { return &corev1.ServiceAccount{} }},
	{"role.json", func() client.Object { return &rbacv1.Role{} }},
	{"rolebinding.json", func() client.Object { return &rbacv1.RoleBinding{} }},
}

// BenchmarkCacheMemory measures the heap the cached objects of one task take (decoded, then
// passed through the cache's transform), beside the same objects untransformed: bytes per task
// (the informers' maps and indexes come on top; the scale harness measures the whole process).
func BenchmarkCacheMemory(b *testing.B) {
	const tasks = 2000
	raw := make([][]byte, len(cachedPerTask))
	for i, c := range cachedPerTask {
		var err error
		if raw[i], err = os.ReadFile(filepath.Join("testdata", "cached", c.file)); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		transform func(any) (any, error)
	}{
		{"as-served", func(o any) (any, error) { return o, nil }},
		{"trimmed", trimForCache},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var perTask float64
			for range b.N {
				held := make([]any, 0, tasks*len(cachedPerTask))
				before := heapAlloc()
				for n := range tasks {
					// Each task its own name and ID (the files' task is t-00000, ID vXIAlWElbM).
					name, id := fmt.Appendf(nil, "t-%05d", n), fmt.Appendf(nil, "%010d", n)
					for i, c := range cachedPerTask {
						obj := c.new()
						doc := bytes.ReplaceAll(bytes.ReplaceAll(raw[i], []byte("t-00000"), name), []byte("vXIAlWElbM"), id)
						if err := json.Unmarshal(doc, obj); err != nil {
							b.Fatal(err)
						}
						kept, err := tc.transform(obj)
						if err != nil {
							b.Fatal(err)
						}
						held = append(held, kept)
					}
				}
				perTask = float64(heapAlloc()-before) / tasks
				runtime.KeepAlive(held)
			}
			b.ReportMetric(perTask, "B/task")
		})
	}
}

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
