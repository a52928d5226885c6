package controller_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/internal/testutil"
	"github.com/taskops/workflowtask-operator/pkg/progress/ingest"
)

// ingestNamespace holds the tasks of ingest mode's controller (startIngestController); the
// suite's controller, in direct mode, does not watch it.
const ingestNamespace = "ctrl-ingest-mode"

// ingestBaseURL is ingest mode's --progress-ingest-url.
const ingestBaseURL = "https://workflowtask-progress-ingest.workflowtask-system.svc"

// caBundleKey is the CA bundle ConfigMap the operator publishes (servingcert's defaults, as
// config/default names it), which ingest mode's controller reads the pods' CA bundle from.
var caBundleKey = types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: servingcert.DefaultBundleConfigMap}

// startIngestController runs, until the test ends, a second controller in ingest mode (as
// main.go with --progress-ingest, the CA bundle from the ConfigMap) for ingestNamespace alone,
// as the operator's ServiceAccount with its real RBAC; it creates the namespace and removes
// the CA bundle ConfigMap a test before it left.
func startIngestController(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ingestNamespace}}
	if err := k8sClient.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	bundle := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: caBundleKey.Namespace, Name: caBundleKey.Name}}
	if err := k8sClient.Delete(ctx, bundle); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	_, err := testenv.StartManagerWith(ctx, adminCfg, testenv.ManagerSetup{
		Cache: func(o *cache.Options) { o.DefaultNamespaces = map[string]cache.Config{ingestNamespace: {}} },
		Reconciler: func(m ctrl.Manager, r *controllers.WorkflowTaskReconciler) error {
			opts := controllers.NewOptions()
			opts.IngestURL = ingestBaseURL
			var err error
			r.Pods.Ingest, err = opts.IngestDefaults(m.GetAPIReader(), caBundleKey)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// publishCABundle writes the CA bundle ConfigMap as the serving certificate's code does.
func publishCABundle(t *testing.T, pem string) {
	t.Helper()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: caBundleKey.Namespace, Name: caBundleKey.Name},
		Data:       map[string]string{servingcert.BundleKey: pem},
	}
	if err := k8sClient.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
}

// runnerRBAC reports whether the task's runner Role and RoleBinding exist.
func runnerRBAC(g gomega.Gomega, task *workflowv1alpha1.WorkflowTask) (role, binding bool) {
	key := client.ObjectKey{Namespace: task.Namespace, Name: task.Name + "-runner"}
	exists := func(obj client.Object) bool {
		err := k8sClient.Get(context.Background(), key, obj)
		g.Expect(client.IgnoreNotFound(err)).To(gomega.Succeed())
		return err == nil
	}
	return exists(&rbacv1.Role{}), exists(&rbacv1.RoleBinding{})
}

// podPush is what a Job's pod template gives its pods to push with.
type podPush struct {
	Automount *bool
	// Tokens are the projected serviceAccountToken sources of the pod's volumes, by volume.
	Tokens map[string]corev1.ServiceAccountTokenProjection
	// Env holds each container's ingest variables (name=value), Mounts its read-only mounts.
	Env    map[string][]string
	Mounts map[string][]string
}

func pushOf(job *batchv1.Job) podPush {
	pod := job.Spec.Template.Spec
	p := podPush{Automount: pod.AutomountServiceAccountToken, Tokens: map[string]corev1.ServiceAccountTokenProjection{},
		Env: map[string][]string{}, Mounts: map[string][]string{}}
	for _, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				p.Tokens[v.Name] = *s.ServiceAccountToken
			}
		}
	}
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "WORKFLOWTASK_PROGRESS_") && e.Name != workflowv1alpha1.EnvProgressFile {
				p.Env[c.Name] = append(p.Env[c.Name], e.Name+"="+e.Value)
			}
		}
		for _, m := range c.VolumeMounts {
			if m.ReadOnly {
				p.Mounts[c.Name] = append(p.Mounts[c.Name], m.Name+":"+m.MountPath)
			}
		}
	}
	return p
}

// In ingest mode a task's runner is its ServiceAccount alone, with no Role or RoleBinding; its
// Job waits for the CA bundle (the task says why), then gives every container the push URL, the
// bundle and a projected token for the ingest audience, and the pod no kube-apiserver token.
func TestIngestMode(t *testing.T) {
	startIngestController(t)
	ctx := context.Background()
	w := testutil.MakeTask("pushes", ingestNamespace)
	w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{}
	task := createTask(t, w)
	g := gomega.NewWithT(t)

	// No CA bundle published yet: the ServiceAccount, no Job, and the reason on the task.
	g.Eventually(func(g gomega.Gomega) {
		got := getTask(g, task)
		c := meta.FindStatusCondition(got.Status.Conditions, workflowv1alpha1.ConditionReconciling)
		g.Expect(c).NotTo(gomega.BeNil())
		g.Expect(c.Reason).To(gomega.Equal(workflowv1alpha1.ReasonReconcileError))
		g.Expect(c.Message).To(gomega.ContainSubstring("the CA bundle ConfigMap " + caBundleKey.String()))
	}).Should(gomega.Succeed())
	sa := &corev1.ServiceAccount{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ingestNamespace, Name: "pushes-runner"}, sa)).To(gomega.Succeed())
	g.Expect(metav1.IsControlledBy(sa, task)).To(gomega.BeTrue(), "the ServiceAccount is the task's")
	err := k8sClient.Get(ctx, client.ObjectKeyFromObject(task), &batchv1.Job{})
	g.Expect(apierrors.IsNotFound(err)).To(gomega.BeTrue(), "a Job without the CA bundle: %v", err)

	ca := testutil.CAPEM(t, "ingest-mode-ca")
	publishCABundle(t, ca)
	job := waitJob(t, task)
	url := ingestBaseURL + ingest.Path(ingestNamespace, "pushes")
	env := []string{ingest.EnvURL + "=" + url, ingest.EnvCA + "=" + ca, ingest.EnvTokenFile + "=/var/run/secrets/progress.taskops.dev/ingest/token"}
	mounts := []string{"workflowtask-progress-token:/var/run/secrets/progress.taskops.dev/ingest"}
	want := podPush{
		Automount: ptr.To(false),
		Tokens: map[string]corev1.ServiceAccountTokenProjection{
			"workflowtask-progress-token": {Audience: ingest.Audience, ExpirationSeconds: ptr.To[int64](3600), Path: "token"},
		},
		Env:    map[string][]string{workflowv1alpha1.ProgressSidecarName: env, "worker": env},
		Mounts: map[string][]string{workflowv1alpha1.ProgressSidecarName: mounts, "worker": mounts},
	}
	if diff := cmp.Diff(want, pushOf(job)); diff != "" {
		t.Errorf("the Job's pod template (-want +got):\n%s", diff)
	}
	g.Consistently(func(g gomega.Gomega) {
		role, binding := runnerRBAC(g, task)
		g.Expect(role).To(gomega.BeFalse(), "a runner Role in ingest mode")
		g.Expect(binding).To(gomega.BeFalse(), "a runner RoleBinding in ingest mode")
	}).Should(gomega.Succeed())
	// Its tokens for kube-apiserver (none in its pods) could not write the status either.
	err = writeProgress(ctx, runnerClient(t, task), task, "runner", progress("upload", 1, 2))
	g.Expect(apierrors.IsForbidden(err)).To(gomega.BeTrue(), "the runner writing its task's status: %v", err)
}

// A task that got its runner's Role and RoleBinding in direct mode, before the operator moved
// to ingest mode, keeps them while its pods may run and loses the binding when it finishes.
func TestIngestModeRevokesEarlierBinding(t *testing.T) {
	startIngestController(t)
	ctx := context.Background()
	publishCABundle(t, testutil.CAPEM(t, "ingest-mode-ca"))
	task := createTask(t, testutil.MakeTask("was-direct", ingestNamespace))
	job := waitJob(t, task)

	// What the direct-mode controller created for it.
	labels := map[string]string{
		workflowv1alpha1.LabelTaskName: task.Name, workflowv1alpha1.LabelTaskID: workflowv1alpha1.TaskIDFromUID(task.UID),
		workflowv1alpha1.LabelManagedBy: workflowv1alpha1.ManagedByValue,
	}
	owner := []metav1.OwnerReference{*metav1.NewControllerRef(task, workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ingestNamespace, Name: "was-direct-runner", Labels: labels, OwnerReferences: owner},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "was-direct-runner"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "was-direct-runner", Namespace: ingestNamespace}},
	}
	if err := k8sClient.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}

	runJob(t, job)
	g := gomega.NewWithT(t)
	g.Consistently(func(g gomega.Gomega) {
		_, bound := runnerRBAC(g, task)
		g.Expect(bound).To(gomega.BeTrue(), "the binding of a running task's pods")
	}).Should(gomega.Succeed())
	completeJob(t, job)
	waitPhase(t, task, workflowv1alpha1.TaskPhaseCompleted)
	g.Eventually(func(g gomega.Gomega) {
		_, bound := runnerRBAC(g, task)
		g.Expect(bound).To(gomega.BeFalse(), "the binding of a finished task")
	}).Should(gomega.Succeed())
}

// In direct mode (the suite's controller) the runner gets its Role and RoleBinding, and the
// pods nothing of ingest mode.
func TestDirectModeRunnerIdentity(t *testing.T) {
	ns := newNamespace(t)
	w := testutil.MakeTask("writes", ns)
	w.Spec.ProgressSidecar = &workflowv1alpha1.ProgressSidecar{}
	task := createTask(t, w)
	job := waitJob(t, task)
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		role, binding := runnerRBAC(g, task)
		g.Expect(role && binding).To(gomega.BeTrue(), "Role %t, RoleBinding %t", role, binding)
	}).Should(gomega.Succeed())
	want := podPush{Tokens: map[string]corev1.ServiceAccountTokenProjection{}, Env: map[string][]string{}, Mounts: map[string][]string{}}
	if diff := cmp.Diff(want, pushOf(job)); diff != "" {
		t.Errorf("the Job's pod template (-want +got):\n%s", diff)
	}
}
