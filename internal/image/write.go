package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Written is where Write put the image.
type Written struct {
	Layout   string            // the OCI image layout (the index)
	Tarballs map[string]string // platform ("linux/amd64") → docker-loadable tarball tagged ref
}

// Write puts the index into dir: an OCI image layout in dir/oci, and for each platform a
// tarball (`docker load`, `ctr image import`, `kind load image-archive`) tagged ref.
func Write(dir string, ref string, idx v1.ImageIndex) (Written, error) {
	tag, err := name.ParseReference(ref)
	if err != nil {
		return Written{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	w := Written{Layout: filepath.Join(dir, "oci"), Tarballs: map[string]string{}}
	if err := os.RemoveAll(w.Layout); err != nil {
		return Written{}, err
	}
	if _, err := layout.Write(w.Layout, idx); err != nil {
		return Written{}, fmt.Errorf("OCI layout: %w", err)
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return Written{}, err
	}
	for _, d := range manifest.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return Written{}, err
		}
		platform := d.Platform.OS + "/" + d.Platform.Architecture
		path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.tar", tarballName(tag), d.Platform.OS, d.Platform.Architecture))
		if err := tarball.WriteToFile(path, tag, img); err != nil {
			return Written{}, fmt.Errorf("tarball %s: %w", platform, err)
		}
		w.Tarballs[platform] = path
	}
	return w, nil
}

// Push pushes the index to ref (credentials from the docker config, as crane and ko do).
func Push(ctx context.Context, ref string, idx v1.ImageIndex, opts ...remote.Option) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, opts...)
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// tarballName is the last path element of the reference's repository (the image's name).
func tarballName(ref name.Reference) string {
	repo := ref.Context().RepositoryStr()
	return filepath.Base(repo)
}
