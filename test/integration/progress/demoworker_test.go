package progress_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// demoWorker is the real-node samples' container program (cmd/workflowtask-demo-worker).
func demoWorker(t *testing.T) string { return binary(t, "workflowtask-demo-worker") }

// The demo worker does each sample type's real file work as the task's runner and reports it;
// its last values land (final write), and --exit-code ends it as a failing container would.
func TestDemoWorker(t *testing.T) {
	for typ, want := range map[string]map[string]int64{ // entry type → final current
		"upload":          {"upload_count": 6},
		"import":          {"imported": 40},
		"create_archive":  {"archive_count": 20},
		"extract_archive": {"extract_count": 20},
		"relocate":        {"relocate": 30},
		"remote_download": {"download": 8 << 20},
	} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			task := newTask(t, "work-"+typ[:4])
			cmd := exec.Command(demoWorker(t), "--type", typ, "--pace", "0", "--dir", t.TempDir())
			cmd.Env = runnerEnv(t, task)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			got := progressOf(gomega.NewWithT(t), task)
			for e, current := range want {
				if got[e].Current != current || got[e].Total != current {
					t.Errorf("%s = %+v, want %d/%d", e, got[e], current, current)
				}
			}
		})
	}
	t.Run("failing container", func(t *testing.T) {
		task := newTask(t, "work-fail")
		cmd := exec.Command(demoWorker(t), "--type", "relocate", "--pace", "0", "--dir", t.TempDir(), "--exit-code", "3")
		cmd.Env = runnerEnv(t, task)
		var exit *exec.ExitError
		if err := cmd.Run(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Fatalf("exit: %v, want code 3", err)
		}
		if got := progressOf(gomega.NewWithT(t), task)["relocate"]; got.Current != 30 {
			t.Errorf("progress before the failing exit not written: %+v", got)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for _, args := range [][]string{{}, {"--type", "upload", "--pace", "-1"}, {"--type", "upload", "--exit-code", "300"},
			{"--type", "download", "--progress-file"}} { // no $WORKFLOWTASK_PROGRESS_FILE
			var exit *exec.ExitError
			if err := exec.Command(demoWorker(t), args...).Run(); !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Errorf("%v: %v, want exit 2", args, err)
			}
		}
	})
}

// With --progress-file the worker writes lines for the progress-file sidecar, and on SIGTERM
// (the pod ends) one last line.
func TestDemoWorkerProgressFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "progress")
	cmd := exec.Command(demoWorker(t), "--type", "download", "--pace", "0.05", "--progress-file")
	cmd.Env = append(os.Environ(), "WORKFLOWTASK_PROGRESS_FILE="+file)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() int { b, _ := os.ReadFile(file); return strings.Count(string(b), "\n") }).Should(gomega.BeNumerically(">=", 3))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "download ") || !strings.HasSuffix(last, "/100 terminated") {
		t.Errorf("last line %q", last)
	}
	for _, l := range lines {
		if _, ok, err := progress.ParseLine(l); !ok || err != nil {
			t.Errorf("line %q does not parse: %v", l, err)
		}
	}
}
