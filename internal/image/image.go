// Package image builds the project's container images without a container engine, with
// go-containerregistry: for each platform, the static binaries (CGO_ENABLED=0, -trimpath, no
// build ID) in one layer on an empty base, run as a non-root user with the first binary as the
// entrypoint — for the operator, the layout the Dockerfile's final stage produces. The
// platforms' images form an OCI index.
// Everything in it is derived from the sources and a fixed time, so the same commit gives the
// same digest.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Binary is a program of an image: the Go package built and where it goes.
type Binary struct {
	Package string // relative to the module root, e.g. "./cmd/workflowtask-progress"
	Path    string // in the image, e.g. "/workflowtask-progress"
}

// Spec is an image: its programs (the first is the entrypoint) and its user.
type Spec struct {
	// Name names the image's files (bin/image/<name>/…) and its default repository.
	Name     string
	Binaries []Binary
	User     string
}

// Entrypoint is the image's entrypoint: its first program.
func (s Spec) Entrypoint() string { return s.Binaries[0].Path }

// The project's images.
var (
	// Operator: the manager and the progress CLI (job pods run it as the progress-file sidecar).
	// The Dockerfile builds the same (TestDockerfileAgrees).
	Operator = Spec{Name: "workflowtask-operator", User: "65532:65532",
		Binaries: []Binary{{Package: ".", Path: "/manager"}, {Package: "./cmd/workflowtask-progress", Path: "/workflowtask-progress"}}}
	// Worker: the sample tasks' program for a real node (cmd/workflowtask-demo-worker).
	Worker = Spec{Name: "workflowtask-demo-worker", User: "65532:65532",
		Binaries: []Binary{{Package: "./cmd/workflowtask-demo-worker", Path: "/workflowtask-demo-worker"}}}
	// Pause: the pod sandbox of a real node (hack/node/pause): it waits, and reaps children.
	Pause = Spec{Name: "pause", User: "65535:65535", Binaries: []Binary{{Package: "./hack/node/pause", Path: "/pause"}}}
)

// Platforms the image is built for by default.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// Options say what to build.
type Options struct {
	// Spec is the image (default Operator).
	Spec Spec
	// Root is the module root.
	Root string
	// Platforms to build (default Platforms).
	Platforms []v1.Platform
	// Created is the images' creation time and every file's modification time: the commit's
	// time keeps the digest reproducible (the zero value: the Unix epoch).
	Created time.Time
	// Labels go into the image configuration (e.g. org.opencontainers.image.revision).
	Labels map[string]string
	// Log receives one line per binary built (nil: none).
	Log io.Writer
}

// Build builds one image per platform and returns them as an OCI index.
func Build(ctx context.Context, o Options) (v1.ImageIndex, error) {
	if len(o.Platforms) == 0 {
		o.Platforms = Platforms
	}
	if len(o.Spec.Binaries) == 0 {
		o.Spec = Operator
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		img, err := buildImage(ctx, o, p)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

func buildImage(ctx context.Context, o Options, p v1.Platform) (v1.Image, error) {
	dir, err := os.MkdirTemp("", "image-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	files := map[string][]byte{}
	for _, b := range o.Spec.Binaries {
		out := filepath.Join(dir, filepath.Base(b.Path))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, b.Package)
		cmd.Dir = o.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-mod=readonly")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s for %s/%s: %w\n%s", b.Package, p.OS, p.Architecture, err, msg)
		}
		if files[b.Path], err = os.ReadFile(out); err != nil {
			return nil, err
		}
		if o.Log != nil {
			fmt.Fprintf(o.Log, "built %s for %s/%s (%d bytes)\n", b.Path, p.OS, p.Architecture, len(files[b.Path]))
		}
	}
	layerTar, err := tarOf(o.Spec.Binaries, files, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), layer)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Created = v1.Time{Time: o.Created.UTC()}
	cfg.Config.User = o.Spec.User
	cfg.Config.Entrypoint = []string{o.Spec.Entrypoint()}
	cfg.Config.Labels = o.Labels
	cfg.History = nil
	return mutate.ConfigFile(img, cfg)
}

// tarOf is a tar of files (path → content) in a fixed order, owned by root, executable,
// dated t: the same input gives the same bytes.
func tarOf(binaries []Binary, files map[string][]byte, t time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, b := range binaries {
		content := files[b.Path]
		hdr := &tar.Header{Name: b.Path[1:], Mode: 0o755, Size: int64(len(content)), ModTime: t.UTC(), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
