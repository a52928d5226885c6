package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// The projected token a task's pods push their progress with (ingest mode). Its path is the
// controller's own choice, not part of the wire protocol: every container learns it from
// $WORKFLOWTASK_PROGRESS_TOKEN_FILE (ingest.EnvTokenFile), so nothing else needs the constant
// (unlike api/v1alpha1's ProgressDir, which the sidecar's command line names).
const (
	ingestTokenVolume = "workflowtask-progress-token"
	ingestTokenDir    = "/var/run/secrets/progress.taskops.dev/ingest"
	ingestTokenPath   = "token"
	ingestTokenFile   = ingestTokenDir + "/" + ingestTokenPath
	// ingestTokenSeconds is the token's lifetime; the kubelet renews it at 80% of that.
	ingestTokenSeconds = 3600
)

// IngestDefaults have every task's pods push their progress to the operator's ingest endpoint
// (apiserver, --progress-ingest) instead of writing the task's status themselves: the pods get
// the push URL, the CA bundle that verifies the endpoint and a projected token for
// ingest.Audience, and no token for kube-apiserver; the runner ServiceAccount gets no RBAC.
type IngestDefaults struct {
	// URL is the base of the push URL, https://host[:port][/prefix] (Options.IngestURL); a
	// task's pods push to URL + ingest.Path(namespace, name).
	URL string
	// CA gives the PEM bundle of the CAs that verify the endpoint's serving certificate, read
	// at each Job creation: the bundle current then goes into the pods' environment.
	CA CABundle
}

// pushTarget is where a task's pods push, resolved when its Job is created; nil in direct mode.
type pushTarget struct {
	// baseURL is IngestDefaults.URL.
	baseURL string
	// caPEM is the CA bundle at Job creation.
	caPEM string
}

// pushTarget resolves the defaults' ingest part: nil when ingest is off.
func (d PodDefaults) pushTarget(ctx context.Context) (*pushTarget, error) {
	if d.Ingest == nil {
		return nil, nil
	}
	pem, err := d.Ingest.CA.PEM(ctx)
	if err != nil {
		return nil, fmt.Errorf("progress ingest: the CA bundle for the task's pods: %w", err)
	}
	return &pushTarget{baseURL: d.Ingest.URL, caPEM: pem}, nil
}

// env is what every container gets to push with: the task's own push URL, the CA bundle, and
// the projected token's file.
func (p *pushTarget) env(task *workflowv1alpha1.WorkflowTask) []corev1.EnvVar {
	if p == nil {
		return nil
	}
	return []corev1.EnvVar{
		{Name: ingest.EnvURL, Value: p.baseURL + ingest.Path(task.Namespace, task.Name)},
		{Name: ingest.EnvCA, Value: p.caPEM},
		{Name: ingest.EnvTokenFile, Value: ingestTokenFile},
	}
}

// addToken gives the pod the projected token for ingest.Audience, mounted read-only in every
// container (the progress sidecar's too: call it after addProgressSidecar), and takes away the
// kube-apiserver token: the runner has no RBAC in ingest mode, and the pod needs none.
func (p *pushTarget) addToken(pod *corev1.PodSpec) {
	if p == nil {
		return
	}
	pod.AutomountServiceAccountToken = ptr.To(false)
	pod.Volumes = append(pod.Volumes, corev1.Volume{
		Name: ingestTokenVolume,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          ingest.Audience,
				ExpirationSeconds: ptr.To[int64](ingestTokenSeconds),
				Path:              ingestTokenPath,
			}}},
		}},
	})
	mount := corev1.VolumeMount{Name: ingestTokenVolume, MountPath: ingestTokenDir, ReadOnly: true}
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for i := range cs {
			cs[i].VolumeMounts = append(cs[i].VolumeMounts, mount)
		}
	}
}
