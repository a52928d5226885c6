package controllers

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/taskops/workflowtask-operator/internal/servingcert"
)

// CABundle gives the PEM bundle of CAs the pods verify the ingest endpoint with.
type CABundle interface {
	// PEM returns the bundle, or an error when none is known (no Job is created then).
	PEM(ctx context.Context) (string, error)
}

// caBundleTTL is how long a CA bundle read from the API is used before it is read again: a Job
// created at most this long after a CA was added to the bundle may lack it. The serving
// certificate's code publishes a new CA servingcert.DefaultPropagation (1m) before it serves
// certificates the CA signs, so a read every few seconds always catches it in time.
const caBundleTTL = 10 * time.Second

// parseCABundle checks that data is a PEM bundle of CA certificates and nothing else: at least
// one block, every block a CERTIFICATE that parses.
func parseCABundle(data []byte) error {
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if strings.TrimSpace(string(rest)) != "" {
				return errors.New("not PEM: text after the last certificate or instead of one")
			}
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %q, not a CERTIFICATE", n, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("PEM block %d: %w", n, err)
		}
	}
	if n == 0 {
		return errors.New("no PEM certificate")
	}
	return nil
}

// StaticCABundle is a fixed CA bundle (PEM).
type StaticCABundle string

// PEM returns the bundle.
func (b StaticCABundle) PEM(context.Context) (string, error) { return string(b), nil }

// fileCABundle reads the bundle from a file (--progress-ingest-ca-file), again whenever the
// file's size or modification time changes (a mounted ConfigMap or Secret the kubelet updates),
// keeping the last good bundle when the file becomes unreadable or broken.
type fileCABundle struct {
	path string

	mu      sync.Mutex
	pem     string
	size    int64
	modTime time.Time
}

// NewFileCABundle returns the bundle in path, which must hold one now.
func NewFileCABundle(path string) (CABundle, error) {
	b := &fileCABundle{path: path}
	if _, err := b.PEM(context.Background()); err != nil {
		return nil, err
	}
	return b, nil
}

// PEM returns the file's bundle.
func (b *fileCABundle) PEM(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fi, err := os.Stat(b.path)
	if err == nil && b.pem != "" && fi.Size() == b.size && fi.ModTime().Equal(b.modTime) {
		return b.pem, nil
	}
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(b.path); err == nil {
			if err = parseCABundle(data); err == nil {
				b.pem, b.size, b.modTime = string(data), fi.Size(), fi.ModTime()
				return b.pem, nil
			}
		}
	}
	err = fmt.Errorf("CA bundle file %s: %w", b.path, err)
	if b.pem == "" {
		return "", err
	}
	log.FromContext(ctx).Error(err, "Keeping the CA bundle read before")
	return b.pem, nil
}

// configMapCABundle reads the bundle from the ConfigMap the serving certificate's code
// publishes (servingcert: the built-in CA's bundle, or cert-manager's CA), straight from the
// API (no kubelet delay), at most every caBundleTTL; it keeps the last good bundle when the
// ConfigMap becomes unreadable or broken.
type configMapCABundle struct {
	reader client.Reader
	key    types.NamespacedName
	clock  clock.PassiveClock

	mu     sync.Mutex
	pem    string
	readAt time.Time
}

// NewConfigMapCABundle returns the bundle under servingcert.BundleKey in the ConfigMap key,
// read through reader (the manager's API reader: one ConfigMap is not worth a cache).
func NewConfigMapCABundle(reader client.Reader, key types.NamespacedName) CABundle {
	return &configMapCABundle{reader: reader, key: key, clock: clock.RealClock{}}
}

// PEM returns the ConfigMap's bundle.
func (b *configMapCABundle) PEM(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if b.pem != "" && now.Sub(b.readAt) < caBundleTTL {
		return b.pem, nil
	}
	pem, err := b.read(ctx)
	if err == nil {
		b.pem, b.readAt = pem, now
		return pem, nil
	}
	if b.pem == "" {
		return "", err
	}
	b.readAt = now // try again after the TTL, not at every Job
	log.FromContext(ctx).Error(err, "Keeping the CA bundle read before")
	return b.pem, nil
}

func (b *configMapCABundle) read(ctx context.Context) (string, error) {
	cm := &corev1.ConfigMap{}
	if err := b.reader.Get(ctx, b.key, cm); err != nil {
		return "", fmt.Errorf("reading the CA bundle ConfigMap %s: %w", b.key, err)
	}
	pem := cm.Data[servingcert.BundleKey]
	if pem == "" {
		return "", fmt.Errorf("the CA bundle ConfigMap %s has no %s yet (the operator publishes it once the serving certificate is issued)",
			b.key, servingcert.BundleKey)
	}
	if err := parseCABundle([]byte(pem)); err != nil {
		return "", fmt.Errorf("the CA bundle ConfigMap %s, key %s: %w", b.key, servingcert.BundleKey, err)
	}
	return pem, nil
}
