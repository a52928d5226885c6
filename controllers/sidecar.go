package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

const progressVolume = "workflowtask-progress"

// addProgressSidecar adds, for a task that asks for it, the progress CLI in file mode as a
// native sidecar, an emptyDir shared with every container, and $WORKFLOWTASK_PROGRESS_FILE.
// The sidecar comes first among the init containers, so it runs before anything else does; env
// is the environment every container gets (the task's identity, the fleet's defaults).
func addProgressSidecar(task *workflowv1alpha1.WorkflowTask, pod *corev1.PodSpec, defaultImage string, env []corev1.EnvVar) {
	spec := task.Spec.ProgressSidecar
	if spec == nil {
		return
	}
	image := spec.Image
	if image == "" {
		image = defaultImage
	}
	mount := corev1.VolumeMount{Name: progressVolume, MountPath: workflowv1alpha1.ProgressDir}
	fileEnv := corev1.EnvVar{Name: workflowv1alpha1.EnvProgressFile, Value: workflowv1alpha1.ProgressFile}
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for i := range cs {
			cs[i].VolumeMounts = append(cs[i].VolumeMounts, mount)
			cs[i].Env = withEnv(cs[i].Env, []corev1.EnvVar{fileEnv})
		}
	}
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: progressVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	sidecar := corev1.Container{
		Name:          workflowv1alpha1.ProgressSidecarName,
		Image:         image,
		Command:       []string{"/workflowtask-progress"},
		Args:          []string{"file", workflowv1alpha1.ProgressFile},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Env:           append(append([]corev1.EnvVar(nil), env...), fileEnv),
		VolumeMounts:  []corev1.VolumeMount{mount},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	pod.InitContainers = append([]corev1.Container{sidecar}, pod.InitContainers...)
}
