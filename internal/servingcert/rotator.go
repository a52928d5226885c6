package servingcert

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
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

// Rotator issues and renews the certificate in the Secret and injects the bundle into the
// APIServices. It runs on the leader only and needs get and update on the Secret, get and
// patch on the APIServices — no list or watch: it reads both again every Interval, and wakes
// when a renewal falls due.
type Rotator struct {
	opts   *Options
	reader client.Reader // uncached: no informer over every Secret
	writer client.Writer
	// written is told after the Secret changed (the Source loads it at once).
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

// Sync does one round: the Secret brought to plan, then the bundle into every APIService. It
// returns how long until the next round.
func (r *Rotator) Sync(ctx context.Context) (time.Duration, error) {
	now := r.opts.Clock.Now()
	secret := &corev1.Secret{}
	if err := r.reader.Get(ctx, r.opts.Secret, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("the Secret %s is missing (config/ ships it empty; create it with kubectl create secret generic %s -n %s): %w",
				r.opts.Secret, r.opts.Secret.Name, r.opts.Secret.Namespace, err)
		}
		return 0, fmt.Errorf("reading the Secret %s: %w", r.opts.Secret, err)
	}
	want, changed, err := r.opts.plan(secret.Data, now)
	if err != nil {
		return 0, err
	}
	if changed {
		secret.Data = want
		if err := r.writer.Update(ctx, secret); err != nil { // resourceVersion: a concurrent writer wins
			return 0, fmt.Errorf("writing the Secret %s: %w", r.opts.Secret, err)
		}
		log.FromContext(ctx).Info("Renewed the progress endpoint's certificates", "ca", subject(want[CACertKey]), "serving", subject(want[CertKey]))
		if r.written != nil {
			r.written()
		}
	}
	for _, name := range r.opts.APIServices {
		if err := r.inject(ctx, name, want[BundleKey]); err != nil {
			return 0, err
		}
	}
	return r.next(want, now), nil
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
func (r *Rotator) next(data map[string][]byte, now time.Time) time.Duration {
	wait := r.opts.Interval
	soonest := func(t time.Time) {
		if d := t.Sub(now); d > 0 && d < wait {
			wait = max(d, time.Second)
		}
	}
	if ca := parseKeyPair(data[CACertKey], data[CAKeyKey]); ca != nil {
		soonest(renewAt(ca.cert))
	}
	if next := parseKeyPair(data[NextCACertKey], data[NextCAKeyKey]); next != nil {
		soonest(issued(next.cert).Add(r.opts.Propagation))
	}
	if serving := parseKeyPair(data[CertKey], data[KeyKey]); serving != nil {
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
