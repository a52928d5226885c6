package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/taskops/workflowtask-operator/internal/kubeauth"
)

// ServiceAccountConfig returns a rest.Config that authenticates as the ServiceAccount ns/name
// with a real token from the TokenRequest API (the same kind of token a pod gets), creating
// the namespace and the ServiceAccount when they do not exist.
func ServiceAccountConfig(ctx context.Context, admin *rest.Config, ns, name string, audiences ...string) (*rest.Config, string, error) {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, "", fmt.Errorf("client: %w", err)
	}
	if err := kubeauth.EnsureServiceAccount(ctx, cs, ns, name); err != nil {
		return nil, "", err
	}
	token, err := kubeauth.Token(ctx, cs, ns, name, kubeauth.TokenOptions{Audiences: audiences})
	if err != nil {
		return nil, "", err
	}
	return kubeauth.BearerConfig(admin, token), token, nil
}

// Token requests a token for an existing ServiceAccount (TokenRequest API, 1 hour).
func Token(ctx context.Context, admin *rest.Config, ns, name string, audiences ...string) (string, error) {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	return kubeauth.Token(ctx, cs, ns, name, kubeauth.TokenOptions{Audiences: audiences})
}

// BearerConfig is admin's server and CA with a bearer token instead of admin's credentials.
func BearerConfig(admin *rest.Config, token string) *rest.Config {
	return kubeauth.BearerConfig(admin, token)
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	return nil
}

// The operator's ServiceAccount as config/default deploys it: the identity the status admission
// policy (config/admission) lets write the whole status.
const (
	OperatorNamespace      = "workflowtask-system"
	OperatorServiceAccount = "workflowtask-controller-manager"
)

// ManagerConfig returns a rest.Config for the operator that holds exactly the permissions of
// config/rbac/role.yaml (the ClusterRole generated from the controller's markers) and of the
// namespaced roles config/rbac and config/apiserver grant it, bound to a ServiceAccount like the
// deployment's, so tests exercise the operator's real RBAC.
func ManagerConfig(ctx context.Context, admin *rest.Config) (*rest.Config, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := readManifest(filepath.Join(root, "config", "rbac", "role.yaml"), role); err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
	}
	const ns, name = OperatorNamespace, OperatorServiceAccount
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "workflowtask-manager-rolebinding"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   subjects,
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating ClusterRoleBinding: %w", err)
	}
	// What config/apiserver grants the manager for the progress endpoint's delegated
	// authentication and authorization.
	delegator := &rbacv1.ClusterRoleBinding{}
	if err := readManifest(filepath.Join(root, "config", "apiserver", "auth_delegator_binding.yaml"), delegator); err != nil {
		return nil, err
	}
	delegator.Subjects = subjects
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, delegator, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating ClusterRoleBinding %s: %w", delegator.Name, err)
	}
	reader := &rbacv1.RoleBinding{}
	if err := readManifest(filepath.Join(root, "config", "apiserver", "auth_reader_binding.yaml"), reader); err != nil {
		return nil, err
	}
	reader.Subjects = subjects
	if _, err := cs.RbacV1().RoleBindings(reader.Namespace).Create(ctx, reader, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating RoleBinding %s/%s: %w", reader.Namespace, reader.Name, err)
	}
	for _, f := range []string{"progress_cert_role.yaml", "ingest_leader_role.yaml"} {
		if err := createCertRBAC(ctx, cs, filepath.Join(root, "config", "rbac", f), subjects); err != nil {
			return nil, err
		}
	}
	cfg, _, err := ServiceAccountConfig(ctx, admin, ns, name)
	return cfg, err
}

// createCertRBAC creates what a file of config/rbac grants the manager (the serving
// certificate's Secret and APIService, its own pod's label), named and placed as config/operator
// does.
func createCertRBAC(ctx context.Context, cs kubernetes.Interface, path string, subjects []rbacv1.Subject) error {
	if err := ensureNamespace(ctx, cs, OperatorNamespace); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // read only
	docs := yaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		var kind metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			return fmt.Errorf("parsing %s: %w", path, err)
		}
		switch kind.Kind {
		case "Role":
			o := &rbacv1.Role{}
			if err = yaml.Unmarshal(doc, o); err == nil {
				o.Name = "workflowtask-" + o.Name
				_, err = cs.RbacV1().Roles(OperatorNamespace).Create(ctx, o, metav1.CreateOptions{})
			}
		case "RoleBinding":
			o := &rbacv1.RoleBinding{}
			if err = yaml.Unmarshal(doc, o); err == nil {
				o.Name, o.RoleRef.Name, o.Subjects = "workflowtask-"+o.Name, "workflowtask-"+o.RoleRef.Name, subjects
				_, err = cs.RbacV1().RoleBindings(OperatorNamespace).Create(ctx, o, metav1.CreateOptions{})
			}
		case "ClusterRole":
			o := &rbacv1.ClusterRole{}
			if err = yaml.Unmarshal(doc, o); err == nil {
				o.Name = "workflowtask-" + o.Name
				_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			}
		case "ClusterRoleBinding":
			o := &rbacv1.ClusterRoleBinding{}
			if err = yaml.Unmarshal(doc, o); err == nil {
				o.Name, o.RoleRef.Name, o.Subjects = "workflowtask-"+o.Name, "workflowtask-"+o.RoleRef.Name, subjects
				_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			}
		default:
			err = fmt.Errorf("unexpected kind %q", kind.Kind)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s from %s: %w", kind.Kind, path, err)
		}
	}
}

// readManifest reads one object from a YAML file of config/.
func readManifest(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// BoundToken requests a token for a ServiceAccount bound to a Secret: deleting the Secret
// invalidates the token, as a pod's projected token dies with its pod.
func BoundToken(ctx context.Context, admin *rest.Config, ns, name string, secret *corev1.Secret) (string, error) {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	return kubeauth.Token(ctx, cs, ns, name, kubeauth.TokenOptions{BoundTo: kubeauth.BoundToSecret(secret)})
}
