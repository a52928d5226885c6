// Command image builds the project's images without a container engine (make image, make
// image-push, make node-images): an OCI index (linux/amd64 and linux/arm64 by default) in
// <out>/oci, a tarball per platform, and — with -push — the index pushed to -img.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/taskops/workflowtask-operator/internal/image"
)

func main() {
	var (
		img       = flag.String("img", "workflowtask-operator:dev", "Image reference (tag of the tarballs; where -push pushes).")
		out       = flag.String("out", "bin/image", "Directory for the OCI layout and the tarballs.")
		platforms = flag.String("platforms", "linux/amd64,linux/arm64", "Comma-separated platforms.")
		push      = flag.Bool("push", false, "Push the index to -img.")
		which     = flag.String("image", "operator", "Which image: operator, worker (the real node's sample worker) or pause (its pod sandbox).")
	)
	flag.Parse()
	spec, ok := map[string]image.Spec{"operator": image.Operator, "worker": image.Worker, "pause": image.Pause}[*which]
	if !ok {
		fmt.Fprintf(os.Stderr, "image: -image %q: want operator, worker or pause\n", *which)
		os.Exit(2)
	}
	if err := run(spec, *img, *out, *platforms, *push); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(spec image.Spec, ref, out, platforms string, push bool) error {
	ctx := context.Background()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	o := image.Options{Spec: spec, Root: root, Log: os.Stderr, Created: commitTime(), Labels: map[string]string{
		"org.opencontainers.image.source": "https://github.com/taskops/workflowtask-operator",
	}}
	if rev := git("rev-parse", "HEAD"); rev != "" {
		o.Labels["org.opencontainers.image.revision"] = rev
	}
	for _, p := range strings.Split(platforms, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("platform %q: want os/arch", p)
		}
		o.Platforms = append(o.Platforms, v1.Platform{OS: osName, Architecture: arch})
	}
	idx, err := image.Build(ctx, o)
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	w, err := image.Write(out, ref, idx)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n  OCI layout: %s\n", ref, digest, w.Layout)
	for p, path := range w.Tarballs {
		fmt.Printf("  %s: %s\n", p, path)
	}
	if push {
		if err := image.Push(ctx, ref, idx); err != nil {
			return err
		}
		fmt.Printf("pushed %s@%s\n", ref, digest)
	}
	return nil
}

// commitTime is SOURCE_DATE_EPOCH, else the time of the commit checked out, else the epoch: the
// image's only date, so that a commit's image is the same wherever it is built.
func commitTime() time.Time {
	for _, s := range []string{os.Getenv("SOURCE_DATE_EPOCH"), git("log", "-1", "--format=%ct")} {
		if secs, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return time.Unix(secs, 0)
		}
	}
	return time.Unix(0, 0)
}

func git(args ...string) string {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
