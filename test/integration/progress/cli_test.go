package progress_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/testenv"
	"github.com/taskops/workflowtask-operator/pkg/progress"
)

var built sync.Map // command directory → func() (string, error), built once

// binary builds ./cmd/<name> once per test binary and returns its path: the tests run the real
// programs.
func binary(t testing.TB, name string) string {
	t.Helper()
	once, _ := built.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		root, err := testenv.RepoRoot()
		if err != nil {
			return "", err
		}
		dir, err := os.MkdirTemp("", name+"-")
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", path, filepath.Join(root, "cmd", name)).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %w\n%s", err, out)
		}
		return path, nil
	}))
	path, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// cli is the progress CLI (cmd/workflowtask-progress).
func cli(t testing.TB) string { return binary(t, "workflowtask-progress") }

// runnerEnv is the environment a task's pod gets, with a kubeconfig holding the runner's token.
func runnerEnv(t *testing.T, task *workflowv1alpha1.WorkflowTask) []string {
	t.Helper()
	cfg := runnerConfig(t, task)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["runner"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "runner"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "KUBECONFIG="+path,
		workflowv1alpha1.EnvTaskName+"="+task.Name, workflowv1alpha1.EnvTaskNamespace+"="+task.Namespace,
		workflowv1alpha1.EnvPodName+"="+task.Name+"-pod")
}

func runCLI(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(cli(t), args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

func TestCLIOneEntryCommands(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		task := newTask(t, "cli")
		env := m.env(t, task, "cli-pod")
		mustRun := func(args ...string) {
			t.Helper()
			if code, stderr := runCLI(t, env, args...); code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
		}

		mustRun("set", "upload", "5/10", "/dst/my file.bin")
		mustRun("set", "upload_count", "1/3")
		mustRun("set", "upload", "7") // current only: total and identifier kept
		settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
			u := e["upload"]
			g.Expect(u.Current == 7 && u.Total == 10 && u.Identifier == "/dst/my file.bin").To(gomega.BeTrue(), "upload = %+v", u)
			c := e["upload_count"]
			g.Expect(c.Current == 1 && c.Total == 3).To(gomega.BeTrue(), "a second one-entry command took away the first's entry: %+v", e)
		})

		mustRun("add", "upload_count", "1")
		mustRun("add", "upload_count", "1")
		mustRun("add", "imported", "4") // a new entry
		settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
			g.Expect(e["upload_count"].Current == 3 && e["imported"].Current == 4).To(gomega.BeTrue(), "after add: %+v", e)
		})

		// delete removes the entry whoever wrote it: here one written by a library reporter.
		opts := m.target(t, task, "cli-lib-pod")
		opts.FieldManager = "workflowtask-progress/lib"
		r, err := progress.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		r.Set("indexed", 10, 10)
		if err := closeWithin(t, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
			g.Expect(e).To(gomega.HaveKey("indexed"))
		})
		mustRun("delete", "indexed")
		mustRun("delete", "upload")
		mustRun("delete", "never_written") // nothing to delete is success
		settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
			g.Expect(e).NotTo(gomega.HaveKey("indexed"))
			g.Expect(e).NotTo(gomega.HaveKey("upload"))
			g.Expect(e).To(gomega.HaveLen(2))
		})
	})
}

func TestCLIExitCodes(t *testing.T) {
	task := newTask(t, "codes")
	other := newTask(t, "not-mine")
	env := runnerEnv(t, task)
	cases := map[string]struct {
		args     []string
		env      []string
		want     int
		inStderr string
	}{
		"no command":          {args: nil, want: 2, inStderr: "a command is required"},
		"unknown command":     {args: []string{"frobnicate"}, want: 2, inStderr: "unknown command"},
		"bad type":            {args: []string{"set", "Upload", "1/2"}, want: 2, inStderr: "invalid type"},
		"bad number":          {args: []string{"set", "upload", "x/2"}, want: 2, inStderr: "whole number"},
		"bad delta":           {args: []string{"add", "upload", "lots"}, want: 2, inStderr: "DELTA"},
		"missing task":        {args: []string{"set", "upload", "1/2"}, env: []string{"PATH=" + os.Getenv("PATH")}, want: 2, inStderr: "--task"},
		"other task":          {args: []string{"--task", other.Name, "--namespace", other.Namespace, "set", "upload", "1/2"}, want: 1, inStderr: "forbidden"},
		"unreachable":         {args: []string{"--timeout", "2s", "set", "upload", "1/2"}, env: append(append([]string{}, env...), "KUBECONFIG=/nonexistent"), want: 1, inStderr: "kubeconfig"},
		"file without a path": {args: []string{"file"}, want: 2, inStderr: "PATH"},
		"bad interval in the environment": {args: []string{"file", "/dev/null"},
			env: append(append([]string{}, env...), workflowv1alpha1.EnvProgressInterval+"=\x1b[2Jsoon"), want: 2, inStderr: workflowv1alpha1.EnvProgressInterval},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := tc.env
			if e == nil {
				e = env
			}
			code, stderr := runCLI(t, e, tc.args...)
			if code != tc.want || !strings.Contains(stderr, tc.inStderr) {
				t.Errorf("exit %d, stderr %q; want exit %d with %q", code, stderr, tc.want, tc.inStderr)
			}
		})
	}
}

// File mode follows a progress file, reports malformed lines by number and skips them, and on
// SIGTERM writes what is left and exits 0.
func TestCLIFileMode(t *testing.T) { eachMode(t, testCLIFileMode) }

func testCLIFileMode(t *testing.T, m mode) {
	task := newTask(t, "file-mode")
	path := filepath.Join(t.TempDir(), "progress") // created later: the CLI waits for it
	cmd := exec.Command(cli(t), "--interval", "100ms", "file", path)
	cmd.Env = m.env(t, task, "file-mode-pod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	appendLines := func(lines ...string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, l := range lines {
			if _, err := f.WriteString(l + "\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendLines("# a comment", "indexed 10/10", "this is not progress", `{"type":"upload_single_0","current":3,"total":8,"identifier":"/dst/a"}`)
	settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
		g.Expect(e["indexed"].Current).To(gomega.Equal(int64(10)))
		g.Expect(e["upload_single_0"].Identifier).To(gomega.Equal("/dst/a"))
	})

	appendLines("delete indexed", "imported 1/10", `{"broken json`, "imported -5/10", "imported 2")
	// The last line has no newline yet when SIGTERM comes: it is still reported.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	_, _ = f.WriteString("upload_single_0 8/8 /dst/a")
	f.Close()
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("file mode exit: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("file mode did not exit after SIGTERM")
	}
	settled(t, task, func(g gomega.Gomega, e map[string]workflowv1alpha1.ProgressEntry) {
		g.Expect(e).NotTo(gomega.HaveKey("indexed"))
		g.Expect(e["imported"].Current == 2 && e["imported"].Total == 10 && e["upload_single_0"].Current == 8).To(gomega.BeTrue(), "final state: %+v", e)
	})
	for _, want := range []string{path + ":3: skipped", path + ":7: skipped", path + ":8: skipped", "negative"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if n := strings.Count(stderr.String(), "skipped"); n != 3 {
		t.Errorf("%d lines reported as skipped, want 3:\n%s", n, stderr.String())
	}
}
