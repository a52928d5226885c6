// Package image builds the operator's container image without a container engine, with
// go-containerregistry: for each platform, the static binaries (CGO_ENABLED=0, -trimpath, no
// build ID) in one layer on an empty base, run as user 65532 with /manager as the entrypoint —
// the layout the Dockerfile's final stage produces. The platforms' images form an OCI index.
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

// User and Entrypoint of the image (the Dockerfile says the same: TestDockerfileAgrees).
const (
	User       = "65532:65532"
	Entrypoint = "/manager"
)

// Binary is a program of the image: the Go package built and where it goes.
type Binary struct {
	Package string // relative to the module root, e.g. "./cmd/workflowtask-progress"
	Path    string // in the image, e.g. "/workflowtask-progress"
}

// Binaries are the image's programs: the manager and the progress CLI (job pods run it as the
// progress-file sidecar).
var Binaries = []Binary{{Package: ".", Path: "/manager"}, {Package: "./cmd/workflowtask-progress", Path: "/workflowtask-progress"}}

// Platforms the image is built for by default.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// Options say what to build.
type Options struct {
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
	for _, b := range Binaries {
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
	layerTar, err := tarOf(files, o.Created)
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
	cfg.Config.User = User
	cfg.Config.Entrypoint = []string{Entrypoint}
	cfg.Config.Labels = o.Labels
	cfg.History = nil
	return mutate.ConfigFile(img, cfg)
}

// tarOf is a tar of files (path → content) in a fixed order, owned by root, executable,
// dated t: the same input gives the same bytes.
func tarOf(files map[string][]byte, t time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, b := range Binaries {
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
