package config_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The plugin's krew manifest, as `make plugin` renders it, is what krew accepts: krew's own
// validator (sigs.k8s.io/krew/cmd/validate-krew-manifest, built from hack/tools/krew) checks
// its structure and installs it with the real `kubectl krew install` from the archive served
// over loopback — sha256, files, bin and the license krew requires — and the installed plugin
// runs as `kubectl workflowtask`.
func TestKrewManifest(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(abs, "bin")
	for _, tool := range []string{"kubectl-krew", "validate-krew-manifest"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			t.Fatalf("%v: make test builds it (make krew)", err)
		}
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl: %v", err)
	}

	dist := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dist))}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	build := exec.Command(filepath.Join(abs, "hack", "build-plugin.sh"))
	build.Env = append(os.Environ(), "PLUGIN_DIST="+dist, "BIN="+t.TempDir(), "VERSION=v0.1.0",
		"PLUGIN_URI_BASE=http://"+ln.Addr().String())
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/build-plugin.sh: %v\n%s", err, out)
	}

	var manifest struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version   string `json:"version"`
			Platforms []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	path := filepath.Join(dist, "workflowtask.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &manifest); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if strings.Contains(string(raw), "{{") || manifest.Metadata.Name != "workflowtask" || manifest.Spec.Version != "v0.1.0" || len(manifest.Spec.Platforms) != 1 {
		t.Fatalf("rendered manifest:\n%s", raw)
	}
	p := manifest.Spec.Platforms[0]
	if p.Selector.MatchLabels["os"] != runtime.GOOS || p.Selector.MatchLabels["arch"] != runtime.GOARCH || p.Bin != "kubectl-workflowtask" {
		t.Errorf("platform %+v, want this machine's", p)
	}
	archive, err := os.ReadFile(filepath.Join(dist, filepath.Base(p.URI)))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(archive); hex.EncodeToString(sum[:]) != p.SHA256 {
		t.Errorf("sha256 in the manifest %s is not the archive's", p.SHA256)
	}

	// krew's validator installs every platform with `kubectl krew install` (kubectl finds the
	// kubectl-krew plugin on PATH) into a KREW_ROOT of its own.
	validate := exec.Command(filepath.Join(bin, "validate-krew-manifest"), "-manifest", path)
	validate.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+filepath.Dir(kubectl)+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("validate-krew-manifest: %v\n%s", err, out)
	}

	// Installed for real, with krew into a root of this test's, it is `kubectl workflowtask`.
	krewRoot := t.TempDir()
	install := exec.Command(kubectl, "krew", "install", "--manifest", path)
	install.Env = append(os.Environ(), "KREW_ROOT="+krewRoot, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("kubectl krew install: %v\n%s", err, out)
	}
	help := exec.Command(kubectl, "workflowtask", "--help")
	help.Env = append(os.Environ(), "PATH="+filepath.Join(krewRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := help.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kubectl workflowtask [command]") {
		t.Errorf("kubectl workflowtask --help after the krew install: %v\n%s", err, out)
	}
}
