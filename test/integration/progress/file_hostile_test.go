package progress_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// lockedBuffer is a stderr the test reads while the CLI writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// File mode survives what untrusted code may write into the progress file: a line far over
// progress.MaxLineLength and binary garbage are reported by line number and skipped, the valid
// lines around them land in the task, and SIGTERM still ends it with exit code 0.
func TestCLIFileModeHostileInput(t *testing.T) {
	task := newTask(t, "file-hostile")
	path := filepath.Join(t.TempDir(), "progress")
	content := "upload 1/10 /dst/a\n" + // 1
		strings.Repeat("x", 70000) + "\n" + // 2: too long
		"\x00\x01\xff\xfe\x1b[2J\r\x7f binary 1/2\n" + // 3: garbage
		"imported 3/4\n" // 4
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cli(t), "--interval", "100ms", "file", path)
	cmd.Env = runnerEnv(t, task)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		e := progressOf(g, task)
		g.Expect(e["upload"].Current).To(gomega.Equal(int64(1)))
		g.Expect(e["imported"].Current).To(gomega.Equal(int64(3)))
	}).Should(gomega.Succeed(), "stderr:\n%s", &stderr)

	// More after the garbage, the last line without its newline when SIGTERM comes.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("upload 2/10\n\xff\x00partial garbage"); err != nil { // lines 5 and 6
		t.Fatal(err)
	}
	f.Close()
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("file mode exit: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("file mode did not exit after SIGTERM; stderr:\n%s", stderr.String())
	}

	e := progressOf(g, task)
	if u := e["upload"]; u.Current != 2 || u.Total != 10 || u.Identifier != "/dst/a" {
		t.Errorf("upload = %+v", u)
	}
	if i := e["imported"]; i.Current != 3 || i.Total != 4 {
		t.Errorf("imported = %+v", i)
	}
	out := stderr.String()
	for _, want := range []string{
		path + ":2: skipped: line longer than " + strconv.Itoa(progress.MaxLineLength) + " bytes",
		path + ":3: skipped: ",
		path + ":6: skipped: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "skipped:"); n != 3 {
		t.Errorf("%d lines reported as skipped, want 3:\n%s", n, out)
	}
	if strings.ContainsAny(out, "\x00\x1b\x7f\r") || strings.Contains(out, "panic") {
		t.Errorf("stderr holds raw control bytes or a panic:\n%q", out)
	}
}
