package servingcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// retryAfterError is how soon a failed round is tried again.
const retryAfterError = 5 * time.Second

// Rotator issues and renews the certificate (the CA Secret, then the serving Secret), injects
// the bundle into the APIServices and publishes it in the bundle ConfigMap; with cert-manager
// keeping the certificate (Manage false) it only publishes. It runs on the leader only and
// needs get and update on the two Secrets and the ConfigMap, get and patch on the APIServices —
// no list or watch: it reads them again every Interval, and wakes when a renewal falls due.
type Rotator struct {
	opts   *Options
	reader client.Reader // uncached: no informer over every Secret
	writer client.Writer
	// written is told after the serving Secret changed (the Source loads it at once).
	written func()
}

var (
	_ manager.Runnable               = (*Rotator)(nil)
	_ manager.LeaderElectionRunnable = (*Rotator)(nil)
)

// NeedLeaderElection is true: one writer.
func (r *Rotator) NeedLeaderElection() bool { return true }

// Start renews and injects until ctx ends; errors are logged and retried.
func (r *Rotator) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("serving-cert").WithValues("secret", r.opts.Secret)
	ctx = log.IntoContext(ctx, logger)
	for {
		wait, err := r.Sync(ctx)
		if err != nil {
			logger.Error(err, "Keeping the progress endpoint's serving certificate; retrying", "after", retryAfterError)
			wait = retryAfterError
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Sync does one round: the CA Secret brought to plan, the bundle into every APIService and the
// ConfigMap, then the serving Secret — a new serving certificate is written only once the
// bundle that trusts it is published. It returns how long until the next round.
func (r *Rotator) Sync(ctx context.Context) (time.Duration, error) {
	if !r.opts.Manage {
		return r.publishIssued(ctx)
	}
	now := r.opts.Clock.Now()
	caSecret, err := r.secret(ctx, r.opts.CASecret())
	if err != nil {
		return 0, err
	}
	serving, err := r.secret(ctx, r.opts.Secret)
	if err != nil {
		return 0, err
	}
	want, bundle, err := r.opts.plan(secrets{ca: caSecret.Data, serving: serving.Data}, now)
	if err != nil {
		return 0, err
	}
	logger := log.FromContext(ctx)
	if !maps.EqualFunc(caSecret.Data, want.ca, bytes.Equal) {
		caSecret.Data = want.ca
		if err := r.writer.Update(ctx, caSecret); err != nil { // resourceVersion: a concurrent writer wins
			return 0, fmt.Errorf("writing the CA Secret %s: %w", r.opts.CASecret(), err)
		}
		logger.Info("Updated the progress endpoint's CA", "caSecret", r.opts.CASecret(), "ca", subject(want.ca[CACertKey]),
			"next", subject(want.ca[NextCACertKey]), "trusted", len(bundle))
	}
	bundlePEM := encodeCerts(bundle)
	for _, name := range r.opts.APIServices {
		if err := r.inject(ctx, name, bundlePEM); err != nil {
			return 0, err
		}
	}
	if err := r.publish(ctx, bundlePEM); err != nil {
		return 0, err
	}
	if !maps.EqualFunc(serving.Data, want.serving, bytes.Equal) {
		moved := len(serving.Data[legacyCAKeyKey]) > 0
		serving.Data = want.serving
		if err := r.writer.Update(ctx, serving); err != nil {
			return 0, fmt.Errorf("writing the Secret %s: %w", r.opts.Secret, err)
		}
		if moved {
			logger.Info("Moved the CA out of the serving Secret", "caSecret", r.opts.CASecret())
		}
		logger.Info("Renewed the progress endpoint's serving certificate", "serving", subject(want.serving[CertKey]))
		if r.written != nil {
			r.written()
		}
	}
	return r.next(want, now), nil
}

// secret reads a Secret the Rotator needs.
func (r *Rotator) secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	if err := r.reader.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the Secret %s is missing (config/ ships it empty; create it with kubectl create secret generic %s -n %s): %w",
				key, key.Name, key.Namespace, err)
		}
		return nil, fmt.Errorf("reading the Secret %s: %w", key, err)
	}
	return secret, nil
}

// publishIssued publishes the CA that issued the serving certificate someone else keeps in the
// Secret (cert-manager writes it as ca.crt): only CAs in ca.crt that signed tls.crt and have not
// expired. Nothing yet issued: nothing published.
func (r *Rotator) publishIssued(ctx context.Context) (time.Duration, error) {
	secret, err := r.secret(ctx, r.opts.Secret)
	if err != nil {
		return 0, err
	}
	served := parseCerts(secret.Data[CertKey])
	if len(served) == 0 {
		return r.opts.Interval, nil
	}
	now := r.opts.Clock.Now()
	var bundle []*x509.Certificate
	for _, ca := range parseCerts(secret.Data[issuerCACertKey]) {
		if ca.IsCA && now.Before(ca.NotAfter) && served[0].CheckSignatureFrom(ca) == nil && !contains(bundle, ca) {
			bundle = append(bundle, ca)
		}
	}
	if len(bundle) == 0 {
		return 0, fmt.Errorf("the Secret %s holds no %s that signed its %s", r.opts.Secret, issuerCACertKey, CertKey)
	}
	return r.opts.Interval, r.publish(ctx, encodeCerts(bundle))
}

// publish puts the bundle into the ConfigMap as its only data (ca.crt), unless it is already so.
func (r *Rotator) publish(ctx context.Context, bundle []byte) error {
	if r.opts.BundleConfigMap == "" {
		return nil
	}
	key := r.opts.BundleConfigMapName()
	cm := &corev1.ConfigMap{}
	if err := r.reader.Get(ctx, key, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("the ConfigMap %s is missing (config/ ships it empty; create it with kubectl create configmap %s -n %s): %w",
				key, key.Name, key.Namespace, err)
		}
		return fmt.Errorf("reading the ConfigMap %s: %w", key, err)
	}
	want := map[string]string{BundleKey: string(bundle)}
	if maps.Equal(cm.Data, want) && len(cm.BinaryData) == 0 {
		return nil
	}
	cm.Data, cm.BinaryData = want, nil
	if err := r.writer.Update(ctx, cm); err != nil {
		return fmt.Errorf("writing the ConfigMap %s: %w", key, err)
	}
	log.FromContext(ctx).Info("Published the CA bundle", "configMap", key, "cas", len(parseCerts(bundle)))
	return nil
}

// inject sets the APIService's caBundle (and clears insecureSkipTLSVerify, which the API
// server refuses together with a caBundle) unless it is already so.
func (r *Rotator) inject(ctx context.Context, name string, bundle []byte) error {
	svc := &unstructured.Unstructured{}
	svc.SetAPIVersion("apiregistration.k8s.io/v1")
	svc.SetKind("APIService")
	if err := r.reader.Get(ctx, types.NamespacedName{Name: name}, svc); err != nil {
		return fmt.Errorf("reading the APIService %s: %w", name, err)
	}
	current, _, _ := unstructured.NestedString(svc.Object, "spec", "caBundle")
	skip, _, _ := unstructured.NestedBool(svc.Object, "spec", "insecureSkipTLSVerify")
	if decoded, err := base64.StdEncoding.DecodeString(current); err == nil && bytes.Equal(decoded, bundle) && !skip {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": bundle, "insecureSkipTLSVerify": false}})
	if err != nil {
		return fmt.Errorf("patching the APIService %s: %w", name, err)
	}
	if err := r.writer.Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patching the APIService %s: %w", name, err)
	}
	log.FromContext(ctx).Info("Injected the CA bundle", "apiService", name)
	return nil
}

// next is how long until the next round: the Interval, or sooner when a certificate falls
// due or a next CA has propagated.
func (r *Rotator) next(data secrets, now time.Time) time.Duration {
	wait := r.opts.Interval
	soonest := func(t time.Time) {
		if d := t.Sub(now); d > 0 && d < wait {
			wait = max(d, time.Second)
		}
	}
	if ca := parseKeyPair(data.ca[CACertKey], data.ca[CAKeyKey]); ca != nil {
		soonest(renewAt(ca.cert))
	}
	if next := parseKeyPair(data.ca[NextCACertKey], data.ca[NextCAKeyKey]); next != nil {
		soonest(issued(next.cert).Add(r.opts.Propagation))
	}
	if serving := parseKeyPair(data.serving[CertKey], data.serving[KeyKey]); serving != nil {
		soonest(renewAt(serving.cert))
	}
	return wait
}

func subject(certPEM []byte) string {
	if certs := parseCerts(certPEM); len(certs) > 0 {
		return certs[0].Subject.CommonName + " until " + certs[0].NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}
