package main

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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/devcluster"
	"github.com/taskops/workflowtask-operator/internal/kubeauth"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// simulateAnnotation tells the kwok node to finish a pod (hack/local-cluster/kwok-stages.yaml).
const simulateAnnotation = "workflow.taskops.dev/simulate"

// demoWorker stands in for a task's container (kwok runs no containers): once the task's pod
// runs, it does real work on local files and reports progress through pkg/progress as the
// task's runner ServiceAccount, then marks the pod done, so the task's phase follows it.
type demoWorker struct {
	cluster *devcluster.Cluster
	cs      kubernetes.Interface
	dir     string
	log     func(format string, args ...any)
}

func (d *demoWorker) run(ctx context.Context, task *workflowv1alpha1.WorkflowTask) error {
	pod, err := d.waitForRunningPod(ctx, task)
	if err != nil {
		return err
	}
	// A token of the runner ServiceAccount bound to the pod, like the one the kubelet would mount.
	token, err := kubeauth.Token(ctx, d.cs, task.Namespace, task.Name+"-runner", kubeauth.TokenOptions{BoundTo: kubeauth.BoundToPod(pod)})
	if err != nil {
		return fmt.Errorf("runner token for %s: %w", task.Name, err)
	}
	r, err := progress.New(progress.Options{Config: d.cluster.TokenConfig(token), Namespace: task.Namespace,
		Task: task.Name, UID: task.UID, FieldManager: "workflowtask-progress/" + pod.Name})
	if err != nil {
		return err
	}
	d.log("%s: pod %s is running; working in %s", task.Name, pod.Name, filepath.Join(d.dir, task.Name))
	workErr := work(ctx, task.Spec.Type, filepath.Join(d.dir, task.Name), r)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		d.log("%s: %v", task.Name, err)
	}
	outcome := "complete"
	if workErr != nil {
		outcome = "fail"
		d.log("%s: the work failed: %v", task.Name, workErr)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, simulateAnnotation, outcome)
	if _, err := d.cs.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("marking pod %s %s: %w", pod.Name, outcome, err)
	}
	d.log("%s: done (%s)", task.Name, outcome)
	return nil
}

func (d *demoWorker) waitForRunningPod(ctx context.Context, task *workflowv1alpha1.WorkflowTask) (*corev1.Pod, error) {
	for {
		pods, err := d.cs.CoreV1().Pods(task.Namespace).List(ctx, metav1.ListOptions{LabelSelector: workflowv1alpha1.LabelTaskName + "=" + task.Name})
		if err == nil {
			for i := range pods.Items {
				if pods.Items[i].Status.Phase == corev1.PodRunning {
					return &pods.Items[i], nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// work does a task type's real work in dir, reporting Cloudreve's progress types, paced to
// take 15-30 s so that there is something to watch.
func work(ctx context.Context, typ workflowv1alpha1.TaskType, dir string, r *progress.Reporter) error {
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	_ = os.RemoveAll(dir)
	switch typ {
	case workflowv1alpha1.TaskTypeUpload:
		files, err := makeFiles(src, 6, 3<<20)
		if err != nil {
			return err
		}
		return upload(ctx, files, dst, r)
	case workflowv1alpha1.TaskTypeImport:
		files, err := makeFiles(src, 40, 16<<10)
		if err != nil {
			return err
		}
		for i := range files { // index first...
			r.Set("indexed", int64(i+1), int64(len(files)))
			if err := pause(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
		r.Delete("indexed") // ...then import: Cloudreve drops "indexed" when "imported" starts
		for i, f := range files {
			if err := copyFile(ctx, f, filepath.Join(dst, filepath.Base(f)), nil, 0); err != nil {
				return err
			}
			r.Set("imported", int64(i+1), int64(len(files)))
			if err := pause(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	case workflowv1alpha1.TaskTypeCreateArchive:
		files, err := makeFiles(src, 20, 512<<10)
		if err != nil {
			return err
		}
		return archive(ctx, files, filepath.Join(dst, "archive.tar.gz"), r, "archive_count", "archive_size", 768<<10)
	case workflowv1alpha1.TaskTypeExtractArchive:
		files, err := makeFiles(src, 20, 512<<10)
		if err != nil {
			return err
		}
		arc := filepath.Join(dir, "input.tar.gz")
		if err := archive(ctx, files, arc, nil, "", "", 0); err != nil {
			return err
		}
		return extract(ctx, arc, dst, r, int64(len(files)))
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
			if err := pause(ctx, 500*time.Millisecond); err != nil {
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
		if err := pause(ctx, 2*time.Second); err != nil {
			return err
		}
		st, _ := os.Stat(files[0])
		e.SetTotal(st.Size())
		return copyFile(ctx, files[0], filepath.Join(dst, "download.bin"), e, 512<<10)
	}
}

// upload copies files to dst with two "upload threads", as Cloudreve reports them.
func upload(ctx context.Context, files []string, dst string, r *progress.Reporter) error {
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
				if err := copyFile(ctx, files[i], to, multi{single, all}, 1<<20); err != nil {
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
func copyFile(ctx context.Context, src, dst string, p adder, bytesPerSec int) error {
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
	return pacedCopy(ctx, out, in, p, bytesPerSec)
}

func pacedCopy(ctx context.Context, w io.Writer, r io.Reader, p adder, bytesPerSec int) error {
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
				if perr := pause(ctx, time.Duration(n)*time.Second/time.Duration(bytesPerSec)); perr != nil {
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
func archive(ctx context.Context, files []string, to string, r *progress.Reporter, countType, sizeType string, bytesPerSec int) error {
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
		err = pacedCopy(ctx, tw, in, size, bytesPerSec)
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
func extract(ctx context.Context, arc, dst string, r *progress.Reporter, files int64) error {
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
		err = pacedCopy(ctx, out, tr, size, 768<<10)
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

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
