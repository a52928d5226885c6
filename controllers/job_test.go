package controllers

import (
	"time"

	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

func TestNewJob(t *testing.T) {
	w := testutil.MakeTask("upload-1", "ns").BackoffLimit(2).ActiveDeadlineSeconds(300).Suspend(true)
	w.UID("uid-1")
	w.Spec.Template.Spec.RestartPolicy = ""
	w.Spec.Template.Spec.ServiceAccountName = "someone-else"
	w.Spec.Template.Labels = map[string]string{"app": "uploader"}
	w.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "x"}}
	w.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: workflowv1alpha1.EnvPodName, Value: "mine"}}
	task := w.Obj()

	job, err := newJob(task, testScheme(t), PodDefaults{ProgressImage: "progress:v1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		workflowv1alpha1.LabelTaskName: "upload-1", workflowv1alpha1.LabelTaskID: workflowv1alpha1.TaskIDFromUID("uid-1"),
		workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue,
	}
	if diff := cmp.Diff(wantLabels, job.Labels); diff != "" {
		t.Errorf("job labels (-want +got):\n%s", diff)
	}
	wantLabels["app"] = "uploader"
	if diff := cmp.Diff(wantLabels, job.Spec.Template.Labels); diff != "" {
		t.Errorf("pod labels (-want +got):\n%s", diff)
	}
	if job.Name != "upload-1" || job.Namespace != "ns" {
		t.Errorf("job key = %s/%s", job.Namespace, job.Name)
	}
	if ref := job.OwnerReferences; len(ref) != 1 || ref[0].UID != "uid-1" || !ptr.Deref(ref[0].Controller, false) || !ptr.Deref(ref[0].BlockOwnerDeletion, false) {
		t.Errorf("owner references = %+v", ref)
	}
	if *job.Spec.BackoffLimit != 2 || *job.Spec.ActiveDeadlineSeconds != 300 || !*job.Spec.Suspend {
		t.Errorf("knobs not passed through: %+v", job.Spec)
	}
	pod := job.Spec.Template.Spec
	if pod.ServiceAccountName != "upload-1-runner" || pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("pod runs as %q with restartPolicy %q", pod.ServiceAccountName, pod.RestartPolicy)
	}
	envNames := func(c corev1.Container) []string {
		var n []string
		for _, e := range c.Env {
			n = append(n, e.Name)
		}
		return n
	}
	all := []string{workflowv1alpha1.EnvTaskName, workflowv1alpha1.EnvTaskID, workflowv1alpha1.EnvTaskUID, workflowv1alpha1.EnvTaskNamespace, workflowv1alpha1.EnvPodName}
	if diff := cmp.Diff(all, envNames(pod.InitContainers[0])); diff != "" {
		t.Errorf("init container env (-want +got):\n%s", diff)
	}
	// The container's own WORKFLOWTASK_POD_NAME wins; the rest are added after it.
	want := []string{workflowv1alpha1.EnvPodName, workflowv1alpha1.EnvTaskName, workflowv1alpha1.EnvTaskID, workflowv1alpha1.EnvTaskUID, workflowv1alpha1.EnvTaskNamespace}
	if diff := cmp.Diff(want, envNames(pod.Containers[0])); diff != "" {
		t.Errorf("container env (-want +got):\n%s", diff)
	}
	if uid := pod.Containers[0].Env[3]; uid.Value != "uid-1" {
		t.Errorf("%s = %+v, want the task's UID", workflowv1alpha1.EnvTaskUID, uid)
	}
	if pod.Containers[0].Env[0].Value != "mine" {
		t.Errorf("container's own variable overwritten: %+v", pod.Containers[0].Env[0])
	}
	if task.Spec.Template.Spec.ServiceAccountName != "someone-else" || len(task.Spec.Template.Spec.Containers[0].Env) != 1 {
		t.Errorf("newJob modified the task's template")
	}
}

func testScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := workflowv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewJobWithProgressSidecar(t *testing.T) {
	w := testutil.MakeTask("t", "ns")
	w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{}
	w.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "fetch", Image: "x"}}
	job, err := newJob(w.Obj(), testScheme(t), PodDefaults{ProgressImage: "registry/operator:v1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pod := job.Spec.Template.Spec
	if len(pod.InitContainers) != 2 || pod.InitContainers[0].Name != workflowv1alpha1.ProgressSidecarName {
		t.Fatalf("sidecar not first among init containers: %+v", pod.InitContainers)
	}
	sc := pod.InitContainers[0]
	if sc.Image != "registry/operator:v1" || ptr.Deref(sc.RestartPolicy, "") != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar image %q restartPolicy %v", sc.Image, sc.RestartPolicy)
	}
	if diff := cmp.Diff([]string{"file", workflowv1alpha1.ProgressFile}, sc.Args); diff != "" {
		t.Errorf("sidecar args (-want +got):\n%s", diff)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].EmptyDir == nil {
		t.Errorf("volumes = %+v", pod.Volumes)
	}
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		var file string
		for _, e := range c.Env {
			if e.Name == workflowv1alpha1.EnvProgressFile {
				file = e.Value
			}
		}
		if file != workflowv1alpha1.ProgressFile || len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != workflowv1alpha1.ProgressDir {
			t.Errorf("container %s: progress file %q mounts %+v", c.Name, file, c.VolumeMounts)
		}
	}

	w.Spec.ProgressSidecar.Image = "mine:v2"
	job, _ = newJob(w.Obj(), testScheme(t), PodDefaults{ProgressImage: "registry/operator:v1"}, nil)
	if got := job.Spec.Template.Spec.InitContainers[0].Image; got != "mine:v2" {
		t.Errorf("task's own sidecar image ignored: %q", got)
	}
}

// The fleet's progress interval (--progress-interval) reaches every container, the progress
// sidecar's too; a container that sets its own keeps it (the task's own cadence); without the
// flag nothing is set and reporters keep their default.
func TestNewJobProgressInterval(t *testing.T) {
	interval := func(c corev1.Container) string {
		for _, e := range c.Env {
			if e.Name == workflowv1alpha1.EnvProgressInterval {
				return e.Value
			}
		}
		return "<unset>"
	}
	w := testutil.MakeTask("t", "ns")
	w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{}
	w.Spec.Template.Spec.Containers = append(w.Spec.Template.Spec.Containers, corev1.Container{Name: "own", Image: "x",
		Env: []corev1.EnvVar{{Name: workflowv1alpha1.EnvProgressInterval, Value: "5s"}}})
	for _, tc := range []struct {
		defaults PodDefaults
		want     map[string]string
	}{
		{PodDefaults{ProgressImage: "p", ProgressInterval: time.Minute},
			map[string]string{workflowv1alpha1.ProgressSidecarName: "1m0s", "worker": "1m0s", "own": "5s"}},
		{PodDefaults{ProgressImage: "p"},
			map[string]string{workflowv1alpha1.ProgressSidecarName: "<unset>", "worker": "<unset>", "own": "5s"}},
	} {
		job, err := newJob(w.Obj(), testScheme(t), tc.defaults, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range append(append([]corev1.Container{}, job.Spec.Template.Spec.InitContainers...), job.Spec.Template.Spec.Containers...) {
			got[c.Name] = interval(c)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%+v: $%s per container (-want +got):\n%s", tc.defaults, workflowv1alpha1.EnvProgressInterval, diff)
		}
	}
}

// In ingest mode every container (the init containers, the containers and the progress
// sidecar) gets the task's push URL, the CA bundle and the token file, and the projected token
// for ingest.Audience mounted read-only; the pod gets no kube-apiserver token, whatever its
// template says. A container's own variables win. Direct mode adds none of it.
func TestNewJobIngest(t *testing.T) {
	// pushView is what a container gets to push with.
	type pushView struct {
		URL, CA, TokenFile string
		Mounts             []corev1.VolumeMount
	}
	type podView struct {
		Automount  *bool
		Volumes    []corev1.Volume
		Containers map[string]pushView
	}
	view := func(pod corev1.PodSpec) podView {
		v := podView{Automount: pod.AutomountServiceAccountToken, Containers: map[string]pushView{}}
		for _, vol := range pod.Volumes {
			if vol.Name == ingestTokenVolume {
				v.Volumes = append(v.Volumes, vol)
			}
		}
		for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
			var p pushView
			for _, e := range c.Env {
				switch e.Name {
				case ingest.EnvURL:
					p.URL = e.Value
				case ingest.EnvCA:
					p.CA = e.Value
				case ingest.EnvTokenFile:
					p.TokenFile = e.Value
				}
			}
			for _, m := range c.VolumeMounts {
				if m.Name == ingestTokenVolume {
					p.Mounts = append(p.Mounts, m)
				}
			}
			v.Containers[c.Name] = p
		}
		return v
	}
	const (
		base = "https://workflowtask-progress-ingest.workflowtask-system.svc"
		url  = base + "/ingest/v1alpha1/namespaces/ns/workflowtasks/t/progress"
		mine = "https://elsewhere.example/ingest/v1alpha1/namespaces/ns/workflowtasks/t/progress"
	)
	ca := testutil.CAPEM(t, "ingest-test-ca")
	mount := []corev1.VolumeMount{{Name: ingestTokenVolume, MountPath: "/var/run/secrets/progress.taskops.dev/ingest", ReadOnly: true}}
	token := []corev1.Volume{{Name: ingestTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: ingest.Audience, ExpirationSeconds: ptr.To[int64](3600), Path: "token",
		}}},
	}}}}
	pushing := pushView{URL: url, CA: ca, TokenFile: "/var/run/secrets/progress.taskops.dev/ingest/token", Mounts: mount}

	task := func(automount *bool) *workflowv1alpha1.WorkflowTask {
		w := testutil.MakeTask("t", "ns")
		w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{}
		w.Spec.Template.Spec.AutomountServiceAccountToken = automount
		w.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "fetch", Image: "x"}}
		w.Spec.Template.Spec.Containers = append(w.Spec.Template.Spec.Containers, corev1.Container{Name: "own", Image: "x",
			Env: []corev1.EnvVar{{Name: ingest.EnvURL, Value: mine}}})
		return w.Obj()
	}
	for name, tc := range map[string]struct {
		task *workflowv1alpha1.WorkflowTask
		push *pushTarget
		want podView
	}{
		"direct mode": {
			task: task(nil),
			want: podView{Containers: map[string]pushView{
				workflowv1alpha1.ProgressSidecarName: {}, "fetch": {}, "worker": {}, "own": {URL: mine},
			}},
		},
		"direct mode keeps the template's automount": {
			task: task(ptr.To(true)),
			want: podView{Automount: ptr.To(true), Containers: map[string]pushView{
				workflowv1alpha1.ProgressSidecarName: {}, "fetch": {}, "worker": {}, "own": {URL: mine},
			}},
		},
		"ingest": {
			task: task(nil),
			push: &pushTarget{baseURL: base, caPEM: ca},
			want: podView{Automount: ptr.To(false), Volumes: token, Containers: map[string]pushView{
				workflowv1alpha1.ProgressSidecarName: pushing, "fetch": pushing, "worker": pushing,
				"own": {URL: mine, CA: ca, TokenFile: pushing.TokenFile, Mounts: mount},
			}},
		},
		"ingest overrides the template's automount": {
			task: task(ptr.To(true)),
			push: &pushTarget{baseURL: base, caPEM: ca},
			want: podView{Automount: ptr.To(false), Volumes: token, Containers: map[string]pushView{
				workflowv1alpha1.ProgressSidecarName: pushing, "fetch": pushing, "worker": pushing,
				"own": {URL: mine, CA: ca, TokenFile: pushing.TokenFile, Mounts: mount},
			}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			job, err := newJob(tc.task, testScheme(t), PodDefaults{ProgressImage: "p"}, tc.push)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, view(job.Spec.Template.Spec)); diff != "" {
				t.Errorf("pod (-want +got):\n%s", diff)
			}
			if tc.task.Spec.Template.Spec.Volumes != nil || len(tc.task.Spec.Template.Spec.Containers[0].VolumeMounts) != 0 {
				t.Errorf("newJob modified the task's template")
			}
		})
	}
}
