// Package kubeauth gets real identities from a cluster: ServiceAccount tokens from the
// TokenRequest API (optionally bound to a pod or a Secret, as a kubelet-mounted token is) and
// rest.Configs that carry them. The tests, the local cluster and the demo workers share it; it
// links no envtest.
package kubeauth

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// DefaultExpiration is a token's lifetime unless TokenOptions say otherwise.
const DefaultExpiration = time.Hour

// TokenOptions shape a token request.
type TokenOptions struct {
	// Audiences the token is for (default: the API server's).
	Audiences []string
	// Expiration of the token (default DefaultExpiration).
	Expiration time.Duration
	// BoundTo is a Pod or Secret the token dies with (BoundToPod, BoundToSecret).
	BoundTo *authenticationv1.BoundObjectReference
}

// Token requests a token for the ServiceAccount ns/name.
func Token(ctx context.Context, cs kubernetes.Interface, ns, name string, o TokenOptions) (string, error) {
	if o.Expiration == 0 {
		o.Expiration = DefaultExpiration
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: o.Audiences, ExpirationSeconds: ptr.To(int64(o.Expiration.Seconds())), BoundObjectRef: o.BoundTo},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}

// BoundToPod binds a token to a pod, as the kubelet's projected token is.
func BoundToPod(pod *corev1.Pod) *authenticationv1.BoundObjectReference {
	return &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
}

// BoundToSecret binds a token to a Secret: deleting the Secret invalidates the token.
func BoundToSecret(secret *corev1.Secret) *authenticationv1.BoundObjectReference {
	return &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID}
}

// EnsureServiceAccount creates the namespace and the ServiceAccount ns/name when missing.
func EnsureServiceAccount(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ServiceAccount %s/%s: %w", ns, name, err)
	}
	return nil
}

// BearerConfig is base's server and CA with a bearer token instead of base's credentials.
func BearerConfig(base *rest.Config, token string) *rest.Config {
	cfg := rest.AnonymousClientConfig(base)
	cfg.BearerToken = token
	return cfg
}
