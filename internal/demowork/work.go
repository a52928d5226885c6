// Package demowork is the sample tasks' work: real file operations (copies with two "upload
// threads", index-then-import, tar.gz archive and extract, moves, a throttled "download") on
// files it makes itself under a directory, reporting progress through pkg/progress the way
// Cloudreve's tasks name it. The demo worker of `make run` runs it on the host for kwok's
// simulated pods; cmd/workflowtask-demo-worker runs it inside a real container.
package demowork

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// Work does typ's work in dir (emptied first), reporting to r. pace scales every deliberate
// delay and throttle (1: the demo's pace, a few tens of seconds a task; 0: as fast as the disk).
func Work(ctx context.Context, typ workflowv1alpha1.TaskType, dir string, r *progress.Reporter, pace float64) error {
	return pacer{pace}.work(ctx, typ, dir, r)
}

// pacer slows the work down to a human-watchable pace.
type pacer struct{ factor float64 }

// work does a task type's real work in dir, reporting Cloudreve's progress types, paced to
// take 15-30 s so that there is something to watch.
func (pc pacer) work(ctx context.Context, typ workflowv1alpha1.TaskType, dir string, r *progress.Reporter) error {
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	_ = os.RemoveAll(dir)
	switch typ {
	case workflowv1alpha1.TaskTypeUpload:
		files, err := makeFiles(src, 6, 3<<20)
		if err != nil {
			return err
		}
		return pc.upload(ctx, files, dst, r)
	case workflowv1alpha1.TaskTypeImport:
		files, err := makeFiles(src, 40, 16<<10)
		if err != nil {
			return err
		}
		for i := range files { // index first...
			r.Set("indexed", int64(i+1), int64(len(files)))
			if err := pc.pause(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
		r.Delete("indexed") // ...then import: Cloudreve drops "indexed" when "imported" starts
		for i, f := range files {
			if err := pc.copyFile(ctx, f, filepath.Join(dst, filepath.Base(f)), nil, 0); err != nil {
				return err
			}
			r.Set("imported", int64(i+1), int64(len(files)))
			if err := pc.pause(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	case workflowv1alpha1.TaskTypeCreateArchive:
		files, err := makeFiles(src, 20, 512<<10)
		if err != nil {
			return err
		}
		return pc.archive(ctx, files, filepath.Join(dst, "archive.tar.gz"), r, "archive_count", "archive_size", 768<<10)
	case workflowv1alpha1.TaskTypeExtractArchive:
		files, err := makeFiles(src, 20, 512<<10)
		if err != nil {
			return err
		}
		arc := filepath.Join(dir, "input.tar.gz")
		if err := pc.archive(ctx, files, arc, nil, "", "", 0); err != nil {
			return err
		}
		return pc.extract(ctx, arc, dst, r, int64(len(files)))
	case workflowv1alpha1.TaskTypeRelocate:
		files, err := makeFiles(src, 30, 64<<10)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		for i, f := range files {
			if err := os.Rename(f, filepath.Join(dst, filepath.Base(f))); err != nil {
				return err
			}
			r.Set("relocate", int64(i+1), int64(len(files)))
			if err := pc.pause(ctx, 500*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	default: // remote_download and custom types: a throttled "download" of a local file
		files, err := makeFiles(src, 1, 8<<20)
		if err != nil {
			return err
		}
		e, _ := r.Entry("download")
		e.Set(0, 0) // the size is not known until the "server" answers
		if err := pc.pause(ctx, 2*time.Second); err != nil {
			return err
		}
		st, _ := os.Stat(files[0])
		e.SetTotal(st.Size())
		return pc.copyFile(ctx, files[0], filepath.Join(dst, "download.bin"), e, 512<<10)
	}
}

// upload copies files to dst with two "upload threads", as Cloudreve reports them.
func (pc pacer) upload(ctx context.Context, files []string, dst string, r *progress.Reporter) error {
	var total int64
	for _, f := range files {
		st, _ := os.Stat(f)
		total += st.Size()
	}
	all, _ := r.Entry("upload")
	all.Set(0, total)
	count, _ := r.Entry("upload_count")
	count.Set(0, int64(len(files)))
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for thread := range 2 {
		wg.Go(func() {
			single, _ := r.Entry(fmt.Sprintf("upload_single_%d", thread))
			for i := thread; i < len(files); i += 2 {
				to := filepath.Join(dst, filepath.Base(files[i]))
				st, _ := os.Stat(files[i])
				single.Set(0, st.Size())
				single.SetIdentifier(to)
				if err := pc.copyFile(ctx, files[i], to, multi{single, all}, 1<<20); err != nil {
					errs <- err
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// multi adds to several entries at once.
type multi []*progress.Entry

func (m multi) Add(n int64) {
	for _, e := range m {
		e.Add(n)
	}
}

type adder interface{ Add(int64) }

// copyFile copies src to dst in 64 KiB chunks at most bytesPerSec (0: unthrottled), adding each
// chunk's size to p.
func (pc pacer) copyFile(ctx context.Context, src, dst string, p adder, bytesPerSec int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }() // read only
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() { _ = out.Close() }() // a demo's output: a lost close error only loses the demo file
	return pc.pacedCopy(ctx, out, in, p, bytesPerSec)
}

func (pc pacer) pacedCopy(ctx context.Context, w io.Writer, r io.Reader, p adder, bytesPerSec int) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if p != nil {
				p.Add(int64(n))
			}
			if bytesPerSec > 0 {
				if perr := pc.pause(ctx, time.Duration(n)*time.Second/time.Duration(bytesPerSec)); perr != nil {
					return perr
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// archive writes files into a tar.gz, reporting files and bytes (when r is not nil).
func (pc pacer) archive(ctx context.Context, files []string, to string, r *progress.Reporter, countType, sizeType string, bytesPerSec int) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	defer func() { _ = out.Close() }() // a demo's output: a lost close error only loses the demo file
	gz := gzip.NewWriter(out)
	tw := tar.NewWriter(gz)
	var size adder
	var total int64
	for _, f := range files {
		st, _ := os.Stat(f)
		total += st.Size()
	}
	if r != nil {
		r.Set(countType, 0, int64(len(files)))
		e, _ := r.Entry(sizeType)
		e.Set(0, total)
		size = e
	}
	for i, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(f), Mode: 0o644, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
			return err
		}
		in, err := os.Open(f)
		if err != nil {
			return err
		}
		err = pc.pacedCopy(ctx, tw, in, size, bytesPerSec)
		_ = in.Close()
		if err != nil {
			return err
		}
		if r != nil {
			r.Set(countType, int64(i+1), int64(len(files)))
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// extract unpacks a tar.gz into dst, reporting files and bytes.
func (pc pacer) extract(ctx context.Context, arc, dst string, r *progress.Reporter, files int64) error {
	in, err := os.Open(arc)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }() // read only
	gz, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	size, _ := r.Entry("extract_size")
	var i int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if i == 0 {
			size.Set(0, h.Size*files) // equal-sized demo files: the total is known up front
		}
		out, err := os.Create(filepath.Join(dst, filepath.Base(h.Name)))
		if err != nil {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			if out, err = os.Create(filepath.Join(dst, filepath.Base(h.Name))); err != nil {
				return err
			}
		}
		err = pc.pacedCopy(ctx, out, tr, size, 768<<10)
		_ = out.Close()
		if err != nil {
			return err
		}
		i++
		r.Set("extract_count", i, files)
	}
}

// makeFiles writes n files of size random bytes into dir.
func makeFiles(dir string, n, size int) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	var out []string
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			return nil, err
		}
		f := filepath.Join(dir, fmt.Sprintf("file-%02d.bin", i))
		if err := os.WriteFile(f, buf, 0o644); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (pc pacer) pause(ctx context.Context, d time.Duration) error {
	d = time.Duration(float64(d) * pc.factor)
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
