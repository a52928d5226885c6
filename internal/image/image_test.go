package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const root = "../.."

// host is this machine's platform: the tests build only it (make image builds every one).
var host = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}

var created = time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)

func build(t *testing.T) v1.ImageIndex {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the image is for linux")
	}
	idx, err := Build(context.Background(), Options{Root: root, Platforms: []v1.Platform{host}, Created: created,
		Labels: map[string]string{"org.opencontainers.image.revision": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func only(t *testing.T, idx v1.ImageIndex) v1.Image {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Platform == nil || !m.Manifests[0].Platform.Equals(host) {
		t.Fatalf("index manifests %+v", m.Manifests)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// files are the image's files (one layer): path → header, and the content of /manager.
func files(t *testing.T, img v1.Image) (map[string]*tar.Header, []byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	var manager []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, manager
		}
		if err != nil {
			t.Fatal(err)
		}
		out["/"+h.Name] = h
		if h.Name == "manager" {
			if manager, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The image runs /manager as user 65532 from an otherwise empty file system; the binary it
// holds runs (--help exits 0); building again gives the same digest; the OCI layout and the
// tarball hold that image; it pushes to a registry and pulls back the same.
func TestImage(t *testing.T) {
	idx := build(t)
	img := only(t, idx)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/manager"}) ||
		cfg.OS != host.OS || cfg.Architecture != host.Architecture || !cfg.Created.Equal(created) {
		t.Errorf("config: user %q entrypoint %v platform %s/%s created %s", cfg.Config.User, cfg.Config.Entrypoint, cfg.OS, cfg.Architecture, cfg.Created)
	}
	hdrs, manager := files(t, img)
	var paths []string
	for p, h := range hdrs {
		paths = append(paths, p)
		if h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) {
			t.Errorf("%s: mode %o uid %d gid %d mtime %s", p, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
	}
	slices.Sort(paths)
	if diff := cmp.Diff([]string{"/manager", "/workflowtask-progress"}, paths); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}

	bin := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(bin, manager, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "-progress-bind-address") {
		t.Errorf("the image's /manager --help: %v\n%s", err, out)
	}

	digest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	again, err := build(t).Digest()
	if err != nil {
		t.Fatal(err)
	}
	if again != digest {
		t.Errorf("built twice: %s, then %s", digest, again)
	}

	dir := t.TempDir()
	w, err := Write(dir, "example.test/workflowtask-operator:dev", idx)
	if err != nil {
		t.Fatal(err)
	}
	fromLayout, err := layout.ImageIndexFromPath(w.Layout)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := fromLayout.Digest(); d != digest {
		t.Errorf("OCI layout holds %s, want %s", d, digest)
	}
	tag, _ := name.NewTag("example.test/workflowtask-operator:dev")
	fromTar, err := tarball.ImageFromPath(w.Tarballs[host.OS+"/"+host.Architecture], &tag)
	if err != nil {
		t.Fatal(err)
	}
	// A docker tarball re-labels the manifest's media types (so another manifest digest): the
	// same image is the same configuration and the same layers.
	for what, get := range map[string]func(v1.Image) (v1.Hash, error){"config": v1.Image.ConfigName, "layer": firstDiffID} {
		want, _ := get(img)
		if got, err := get(fromTar); err != nil || got != want {
			t.Errorf("tarball %s %s, want %s (%v)", what, got, want, err)
		}
	}

	// go-containerregistry's registry, in process, on loopback.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	ref := u.Host + "/taskops/workflowtask-operator:test"
	if err := Push(context.Background(), ref, idx); err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref)
	pulled, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pulled.Digest(); d != digest {
		t.Errorf("pulled %s, pushed %s", d, digest)
	}
}

func firstDiffID(img v1.Image) (v1.Hash, error) {
	cfg, err := img.ConfigFile()
	if err != nil || len(cfg.RootFS.DiffIDs) == 0 {
		return v1.Hash{}, err
	}
	return cfg.RootFS.DiffIDs[0], nil
}

// The Dockerfile's final stage makes the image this package makes: an empty base, the same
// binaries at the same paths built with the same flags, the same user and entrypoint.
func TestDockerfileAgrees(t *testing.T) {
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []string // FROM lines
	var final []string  // instructions of the final stage
	var built []string  // go build outputs of the build stage, as "-o path package"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, line)
			final = nil
			continue
		}
		final = append(final, line)
		for _, part := range strings.Split(line, "go build ")[1:] {
			if !strings.Contains(part, `-ldflags="-s -w -buildid="`) || !strings.Contains(part, "-trimpath") {
				t.Errorf("go build without the image's flags: %s", part)
			}
			_, rest, _ := strings.Cut(part, "-o ")
			fields := strings.Fields(rest)
			built = append(built, fields[0]+" "+fields[1])
		}
	}
	if len(stages) != 2 || stages[1] != "FROM scratch" {
		t.Fatalf("stages %v: want a build stage and FROM scratch", stages)
	}
	var wantBuilt []string
	for _, b := range Operator.Binaries {
		wantBuilt = append(wantBuilt, "/out"+b.Path+" "+b.Package)
	}
	if diff := cmp.Diff(wantBuilt, built); diff != "" {
		t.Errorf("binaries (-image +Dockerfile):\n%s", diff)
	}
	wantFinal := []string{"COPY --from=build /out/ /", "USER " + Operator.User, `ENTRYPOINT ["` + Operator.Entrypoint() + `"]`}
	if diff := cmp.Diff(wantFinal, final); diff != "" {
		t.Errorf("final stage (-image +Dockerfile):\n%s", diff)
	}
}

// The real node's images: the sample worker and the pod sandbox, each its one program as the
// entrypoint, run as a non-root user; the sandbox's program waits until SIGTERM and exits 0.
func TestNodeImages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the images are for linux")
	}
	for _, spec := range []Spec{Worker, Pause} {
		t.Run(spec.Name, func(t *testing.T) {
			idx, err := Build(context.Background(), Options{Spec: spec, Root: root, Platforms: []v1.Platform{host}, Created: created})
			if err != nil {
				t.Fatal(err)
			}
			img := only(t, idx)
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Config.User != spec.User || !slices.Equal(cfg.Config.Entrypoint, []string{spec.Entrypoint()}) || cfg.Config.User == "" || strings.HasPrefix(cfg.Config.User, "0") {
				t.Errorf("user %q entrypoint %v", cfg.Config.User, cfg.Config.Entrypoint)
			}
			content := program(t, img, spec.Entrypoint())
			bin := filepath.Join(t.TempDir(), filepath.Base(spec.Entrypoint()))
			if err := os.WriteFile(bin, content, 0o755); err != nil {
				t.Fatal(err)
			}
			if spec.Name != Pause.Name {
				if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil {
					t.Errorf("--help: %v\n%s", err, out)
				}
				return
			}
			cmd := exec.Command(bin)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // it is waiting
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("pause after SIGTERM: %v", err)
			}
		})
	}
}

// program is one file of the image's layer.
func program(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the image: %v", path, err)
		}
		if "/"+h.Name == path {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
