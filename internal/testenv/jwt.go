package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ServiceAccountSigner is kube-apiserver's service-account signing key as envtest writes it
// into the API server's certificate directory: what signs every genuine token.
func ServiceAccountSigner(certDir string) (crypto.Signer, error) {
	keyPEM, err := os.ReadFile(filepath.Join(certDir, "sa-signer.key"))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("service-account key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("service-account key: %T cannot sign", k)
	}
	return signer, nil
}

// Resign is token (a JWT) with its claims changed by mutate and signed by key — RS256 for an
// RSA key, ES256 for an ECDSA one — its header kept.
func Resign(token string, key crypto.Signer, mutate func(claims map[string]any)) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", err
	}
	mutate(claims)
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey: // RS256
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			return "", err
		}
	case *ecdsa.PrivateKey: // ES256: r || s, each the curve's size
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			return "", err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig = append(r.FillBytes(make([]byte, n)), s.FillBytes(make([]byte, n))...)
	default:
		return "", fmt.Errorf("unexpected key %T", key)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
