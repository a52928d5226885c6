package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kustomize renders the kustomization in config/<dir> with kubectl, as a user installing it
// would, and returns its objects.
func Kustomize(kubectl, dir string) ([]*unstructured.Unstructured, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "config", dir)).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/%s: %w", dir, err)
	}
	objs, err := DecodeObjects(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("parsing config/%s: %w", dir, err)
	}
	return objs, nil
}

// Install creates every object of config/<dir> as kustomize renders it: the manifests a user
// installs, not a copy of them.
func Install(ctx context.Context, c client.Client, kubectl, dir string) error {
	objs, err := Kustomize(kubectl, dir)
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("creating %s %s of config/%s: %w", u.GetKind(), u.GetName(), dir, err)
		}
	}
	return nil
}

// ReadObjects reads every object of a multi-document YAML (or JSON) file.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	objs, err := DecodeObjects(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return objs, nil
}

// DecodeObjects decodes every object of a multi-document YAML (or JSON) stream, skipping empty
// documents.
func DecodeObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// DeploymentContainer is the container named container of the Deployment in the repository's
// file (e.g. config/manager/manager.yaml), decoded strictly: a field its type does not have is
// an error.
func DeploymentContainer(file, container string) (corev1.Container, error) {
	root, err := RepoRoot()
	if err != nil {
		return corev1.Container{}, err
	}
	objs, err := ReadObjects(filepath.Join(root, file))
	if err != nil {
		return corev1.Container{}, err
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &d, true); err != nil {
			return corev1.Container{}, fmt.Errorf("%s: %w", file, err)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == container {
				return c, nil
			}
		}
	}
	return corev1.Container{}, fmt.Errorf("%s: no Deployment with a container %q", file, container)
}
