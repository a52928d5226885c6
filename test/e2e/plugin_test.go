package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/taskops/workflowtask-operator/internal/plugin"
	"github.com/taskops/workflowtask-operator/internal/testutil"
)

// kubectl-workflowtask watch in a real terminal: tmux gives it a TTY of a fixed size, and what
// it draws is read back with capture-pane while the task's pod reports progress. The bars
// advance, an ETA appears once there is a rate, and the task's completion ends the watch with
// the final phase line and exit code 0.
func TestPluginWatchInTmux(t *testing.T) {
	tm := newTmux(t)
	const task, total = "plugin-tty", 100 * 1024
	pod := pluginTask(t, task, "")
	r := newRunner(t, pod, task)
	if err := r.set("upload", fmt.Sprintf("1024/%d", total)); err != nil {
		t.Fatal(err)
	}

	exitFile := filepath.Join(t.TempDir(), "exit")
	tm.newSession(t, "watch", fmt.Sprintf("KUBECONFIG=%s %s watch %s -n default --timeout 5m; echo exit=$? > %s; sleep 3600",
		shellQuote(cluster.Kubeconfig), shellQuote(pluginBin), task, shellQuote(exitFile)))

	// The pod's worker uploads 4 KiB at a time, a little faster than once a second, until told
	// to stop: enough samples for a rate and an ETA, and a few cells of the bar each time.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(700 * time.Millisecond)
		defer tick.Stop()
		for cur := 4096; cur < total; cur += 4096 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := r.set("upload", fmt.Sprintf("%d/%d", cur, total)); err != nil {
				t.Errorf("reporting progress: %v", err)
				return
			}
		}
	}()
	stopAdvancing := sync.OnceFunc(func() { close(stop); <-stopped })
	t.Cleanup(stopAdvancing)

	g := gomega.NewWithT(t)
	var screen string
	var first int64
	var firstFill int
	g.Eventually(func(g gomega.Gomega) {
		var err error
		screen, err = tm.capture("watch")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		header := lineWith(screen, "default/"+task)
		g.Expect(header).To(gomega.ContainSubstring("Processing"), "the header names the task and its phase:\n%s", screen)
		cur, tot, ok := byteAmount(lineWith(screen, "upload"))
		g.Expect(ok).To(gomega.BeTrue(), "an upload line with a byte amount:\n%s", screen)
		g.Expect(tot).To(gomega.Equal(int64(total)), screen)
		fill, ok := barFill(lineWith(screen, "upload"))
		g.Expect(ok).To(gomega.BeTrue(), "a drawn bar on the upload line:\n%s", screen)
		first, firstFill = cur, fill
	}).Should(gomega.Succeed())
	t.Logf("first capture (upload at %d bytes, %d cells of the bar filled):\n%s", first, firstFill, screen)

	g.Eventually(func(g gomega.Gomega) {
		var err error
		screen, err = tm.capture("watch")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		cur, _, ok := byteAmount(lineWith(screen, "upload"))
		g.Expect(ok).To(gomega.BeTrue(), screen)
		g.Expect(cur).To(gomega.BeNumerically(">", first), "the upload amount grows:\n%s", screen)
		fill, ok := barFill(lineWith(screen, "upload"))
		g.Expect(ok).To(gomega.BeTrue(), screen)
		g.Expect(fill).To(gomega.BeNumerically(">", firstFill), "the upload bar fills:\n%s", screen)
	}).Should(gomega.Succeed())
	t.Logf("a later capture:\n%s", screen)

	etaDigit := regexp.MustCompile(`ETA [0-9]`)
	g.Eventually(func(g gomega.Gomega) {
		var err error
		screen, err = tm.capture("watch")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(etaDigit.MatchString(lineWith(screen, "upload"))).To(gomega.BeTrue(), "an ETA on the upload line:\n%s", screen)
	}).Should(gomega.Succeed())
	t.Logf("with an ETA:\n%s", screen)

	stopAdvancing()
	completePod(t, pod)
	g.Eventually(func(g gomega.Gomega) {
		var err error
		screen, err = tm.capture("watch")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(screen).To(gomega.ContainSubstring("default/" + task + ": Completed"))
	}).Should(gomega.Succeed())
	t.Logf("after completion:\n%s", screen)
	g.Eventually(func() string { b, _ := os.ReadFile(exitFile); return strings.TrimSpace(string(b)) }).
		Should(gomega.Equal(fmt.Sprintf("exit=%d", plugin.ExitCompleted)))
}

// With its output going to a file, the watch writes plain lines, one per change, without a
// single escape code, and ends with the final phase line.
func TestPluginPlainOutput(t *testing.T) {
	const task = "plugin-plain"
	pod := pluginTask(t, task, "")
	r := newRunner(t, pod, task)
	for _, e := range [][]string{{"upload", "1024/4096"}, {"upload_count", "3/6"}} {
		if err := r.set(e...); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "watch.out")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := startPlugin(t, f, "watch", task, "-n", "default", "--timeout", "5m")
	read := func() string { b, _ := os.ReadFile(path); return string(b) }

	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		out := read()
		g.Expect(lineWith(out, "upload_count")).To(gomega.ContainSubstring("3/6"), out)
		g.Expect(lineWith(out, "upload")).To(gomega.ContainSubstring("1.0 KiB / 4.0 KiB"), out)
	}).Should(gomega.Succeed())
	if err := r.set("upload", "2048/4096"); err != nil {
		t.Fatal(err)
	}
	g.Eventually(func() string { return lineWith(read(), "upload") }).Should(gomega.ContainSubstring("2.0 KiB / 4.0 KiB"), "a new line for the change")
	completePod(t, pod)

	code := w.wait()
	out := read()
	t.Logf("plain output (exit %d):\n%s", code, out)
	if code != plugin.ExitCompleted {
		t.Errorf("exit code %d, want %d; stderr:\n%s", code, plugin.ExitCompleted, w.stderr.String())
	}
	if i := strings.IndexByte(out, 0x1b); i >= 0 {
		t.Errorf("escape code at byte %d of the plain output: %q", i, out[max(0, i-20):min(len(out), i+20)])
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if last := lines[len(lines)-1]; !finalLine(task, "Completed").MatchString(last) {
		t.Errorf("last line %q, want %q", last, finalLine(task, "Completed"))
	}
}

// The exit code says how the task ended, or that the watch gave up or could not start.
func TestPluginExitCodes(t *testing.T) {
	t.Run("Error", func(t *testing.T) {
		const task = "plugin-fail"
		pod := pluginTask(t, task, "  backoffLimit: 0") // the first failed pod fails the Job
		report(t, pod, task, "set", "upload", "1/2")
		var out testutil.SyncBuffer
		w := startPlugin(t, &out, "watch", task, "-n", "default", "--timeout", "5m")
		gomega.NewWithT(t).Eventually(out.String).Should(gomega.ContainSubstring("upload"), "the watch has started")
		kubectl(t, "annotate", "pod", "-n", "default", pod.Name, "workflow.taskops.dev/simulate=fail")
		w.expect(t, plugin.ExitFailed, &out, task, "Error")
		if phase := jsonpath(t, "default", "wft", task, "{.status.phase}"); phase != "Error" {
			t.Errorf("phase %q", phase)
		}
	})

	t.Run("Canceled", func(t *testing.T) {
		const task = "plugin-cancel"
		pod := pluginTask(t, task, "")
		report(t, pod, task, "set", "upload", "1/2")
		var out testutil.SyncBuffer
		w := startPlugin(t, &out, "watch", task, "-n", "default", "--timeout", "5m")
		gomega.NewWithT(t).Eventually(out.String).Should(gomega.ContainSubstring("upload"), "the watch has started")
		var cancelOut testutil.SyncBuffer
		if code := startPlugin(t, &cancelOut, "cancel", task, "-n", "default").wait(); code != 0 {
			t.Fatalf("kubectl-workflowtask cancel: exit %d\n%s", code, cancelOut.String())
		}
		w.expect(t, plugin.ExitCanceled, &out, task, "Canceled")
		if got := jsonpath(t, "default", "wft", task, "{.spec.cancel}/{.status.phase}"); got != "true/Canceled" {
			t.Errorf("spec.cancel/phase: %q", got)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		const task = "plugin-timeout"
		pluginTask(t, task, "")
		var out testutil.SyncBuffer
		w := startPlugin(t, &out, "watch", task, "-n", "default", "--timeout", "2s")
		if code := w.wait(); code != plugin.ExitTimeout {
			t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, plugin.ExitTimeout, out.String(), w.stderr.String())
		}
		if phase := jsonpath(t, "default", "wft", task, "{.status.phase}"); phase != "Processing" {
			t.Errorf("the task is %s after a watch timed out", phase)
		}
	})

	t.Run("not found", func(t *testing.T) {
		var out testutil.SyncBuffer
		w := startPlugin(t, &out, "watch", "plugin-no-such-task", "-n", "default")
		if code := w.wait(); code != plugin.ExitCannotWatch {
			t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, plugin.ExitCannotWatch, out.String(), w.stderr.String())
		}
		if !strings.Contains(w.stderr.String(), "plugin-no-such-task") {
			t.Errorf("stderr does not name the task:\n%s", w.stderr.String())
		}
	})
}

// pluginTask creates a task for a plugin test, waits until its pod runs and it is Processing,
// and deletes it when the test ends.
func pluginTask(t *testing.T, name, extraSpec string) corev1.Pod {
	t.Helper()
	applyTask(t, name, extraSpec, "")
	t.Cleanup(func() {
		_, _ = cluster.Kubectl(context.Background(), "delete", "workflowtask", name, "--ignore-not-found", "--wait=false")
	})
	pod := runningPod(t, "default", name)
	gomega.NewWithT(t).Eventually(func() string { return jsonpath(t, "default", "wft", name, "{.status.phase}") }).Should(gomega.Equal("Processing"))
	return pod
}

// pluginProc is a running kubectl-workflowtask, as admin.
type pluginProc struct {
	args   []string
	done   chan error
	stderr *testutil.SyncBuffer
}

// startPlugin starts kubectl-workflowtask with args and the admin kubeconfig, its stdout going to
// out (a pipe or a file: not a terminal). It is killed if it runs past the test.
func startPlugin(t *testing.T, out io.Writer, args ...string) *pluginProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	args = append(args, "--kubeconfig", cluster.Kubeconfig)
	cmd := exec.CommandContext(ctx, pluginBin, args...)
	p := &pluginProc{args: args, done: make(chan error, 1), stderr: &testutil.SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = out, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// wait waits for the plugin to exit and returns its exit code (-1 if it was killed).
func (p *pluginProc) wait() int {
	err := <-p.done
	p.done <- err
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	}
	return -1
}

// expect checks the exit code and that stdout ends with the final phase line.
func (p *pluginProc) expect(t *testing.T, code int, out *testutil.SyncBuffer, task, phase string) {
	t.Helper()
	got := p.wait()
	t.Logf("kubectl-workflowtask %s: exit %d\n%s", strings.Join(p.args, " "), got, out.String())
	if got != code {
		t.Errorf("exit code %d, want %d; stderr:\n%s", got, code, p.stderr.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if l := lines[len(lines)-1]; !finalLine(task, phase).MatchString(l) {
		t.Errorf("last line %q, want %q", l, finalLine(task, phase))
	}
}

// finalLine matches the line a watch ends with: "default/NAME: Phase", and for a task that did
// not complete, the reason after it in parentheses.
func finalLine(task, phase string) *regexp.Regexp {
	return regexp.MustCompile(`^default/` + regexp.QuoteMeta(task) + `: ` + phase + `( \(.+\))?$`)
}

// tmuxServer is a private tmux server (its own socket, no user configuration), killed with
// everything in it when the test ends.
type tmuxServer struct{ socket string }

func newTmux(t *testing.T) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not on PATH; the terminal tests need it: run hack/debian-packages.sh tmux (make test does)")
	}
	s := &tmuxServer{socket: fmt.Sprintf("wft-e2e-%d-%s", os.Getpid(), regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))}
	t.Cleanup(func() {
		socket, err := s.cmd("display-message", "-p", "#{socket_path}").Output()
		_ = s.cmd("kill-server").Run()
		if path := strings.TrimSpace(string(socket)); err == nil && path != "" {
			_ = os.Remove(path) // tmux leaves it behind
		}
	})
	return s
}

func (s *tmuxServer) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command("tmux", append([]string{"-L", s.socket, "-f", "/dev/null"}, args...)...)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMUX=") && !strings.HasPrefix(kv, "TMUX_PANE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// newSession runs a shell command in a detached 160x40 terminal.
func (s *tmuxServer) newSession(t *testing.T, name, command string) {
	t.Helper()
	if out, err := s.cmd("new-session", "-d", "-x", "160", "-y", "40", "-s", name, command).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			screen, err := s.capture(name)
			t.Logf("tmux session %s at the end (%v):\n%s", name, err, screen)
		}
	})
}

// keys types into the session: text and tmux key names (Enter, Tab, C-u).
func (s *tmuxServer) keys(t *testing.T, name string, keys ...string) {
	t.Helper()
	if out, err := s.cmd(append([]string{"send-keys", "-t", name}, keys...)...).CombinedOutput(); err != nil {
		t.Fatalf("tmux send-keys: %v\n%s", err, out)
	}
}

// capture is what the session's terminal shows.
func (s *tmuxServer) capture(name string) (string, error) {
	out, err := s.cmd("capture-pane", "-p", "-t", name).Output()
	if err != nil {
		return "", fmt.Errorf("tmux capture-pane: %w", err)
	}
	return strings.TrimRight(string(out), "\n"), nil
}

// lineWith is the last line of text containing word as a whole word ("upload" is not in
// "upload_count"), or "".
func lineWith(text, word string) string {
	re := regexp.MustCompile(`(?:^|[^A-Za-z0-9_])` + regexp.QuoteMeta(word) + `(?:$|[^A-Za-z0-9_])`)
	lines := strings.Split(text, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if re.MatchString(lines[i]) {
			return lines[i]
		}
	}
	return ""
}

var byteAmountRE = regexp.MustCompile(`([0-9]+(?:\.[0-9]+)?) (B|KiB|MiB|GiB) / ([0-9]+(?:\.[0-9]+)?) (B|KiB|MiB|GiB)`)

// byteAmount reads "1.5 KiB / 4.0 KiB" in a line as bytes (to the precision shown).
func byteAmount(line string) (current, total int64, ok bool) {
	m := byteAmountRE.FindStringSubmatch(line)
	if m == nil {
		return 0, 0, false
	}
	amount := func(num, unit string) int64 {
		f, _ := strconv.ParseFloat(num, 64)
		return int64(f * float64(map[string]int64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]))
	}
	return amount(m[1], m[2]), amount(m[3], m[4]), true
}

var barRE = regexp.MustCompile(`\[([^\]]+)\]`)

// barFill counts the filled cells of the bar drawn in a line ("[===>-----]": 4): the cells
// unlike the last one, which stays empty until the end.
func barFill(line string) (int, bool) {
	m := barRE.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	cells := []rune(m[1])
	n := 0
	for _, c := range cells {
		if c != cells[len(cells)-1] {
			n++
		}
	}
	return n, true
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// `kubectl workflowtask <TAB>` in bash as a user has it (and get -o with kubectl's printers): kubectl's own completion loaded (it
// needs Debian's bash-completion), the plugin and its kubectl_complete-workflowtask shim
// (hack/krew) on PATH. TAB completes a subcommand, a task's name in the namespace, and a
// namespace after -n, each from the cluster.
func TestPluginCompletionInTmux(t *testing.T) {
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("%v: kubectl's bash completion needs Debian's bash-completion (make test installs it: hack/debian-packages.sh)", err)
	}
	applyTask(t, "completion-target-7q", "", "")
	dir := t.TempDir()
	if err := os.Symlink(pluginBin, filepath.Join(dir, "kubectl-workflowtask")); err != nil {
		t.Fatal(err)
	}
	shim, err := os.ReadFile(filepath.Join(root, "hack", "krew", "kubectl_complete-workflowtask"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-workflowtask"), shim, 0o755); err != nil {
		t.Fatal(err)
	}
	tm := newTmux(t)
	tm.newSession(t, "complete", fmt.Sprintf("env PATH=%s:$PATH KUBECONFIG=%s bash --norc --noprofile -i",
		shellQuote(dir), shellQuote(cluster.Kubeconfig)))
	tm.keys(t, "complete", "source "+bashCompletion+"; source <(kubectl completion bash); clear", "Enter")
	for _, c := range []struct{ typed, completed string }{
		{"kubectl workflowtask wat", "kubectl workflowtask watch "},
		{"kubectl workflowtask describe completion-tar", "kubectl workflowtask describe completion-target-7q "},
		{"kubectl workflowtask get -n defau", "kubectl workflowtask get -n default "},
	} {
		tm.keys(t, "complete", c.typed, "Tab")
		gomega.NewWithT(t).Eventually(func() string {
			screen, _ := tm.capture("complete")
			return lineWith(screen, "kubectl")
		}).WithTimeout(20*time.Second).Should(gomega.HaveSuffix(strings.TrimSpace(c.completed)), "after %q and TAB", c.typed)
		tm.keys(t, "complete", "C-u") // a fresh line for the next
	}
	// -v as kubectl's: client-go logs each request at 6, nothing without.
	for v, logs := range map[string]bool{"-v=6": true, "-v=0": false} {
		cmd := exec.Command(pluginBin, "get", "completion-target-7q", "-n", "default", v, "--kubeconfig", cluster.Kubeconfig)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || strings.Contains(stderr.String(), `verb="GET"`) != logs {
			t.Errorf("get %s: %v; requests logged: %t, want %t\n%s", v, err, !logs, logs, stderr.String())
		}
	}
	// kubectl's printers on what the server answers.
	for output, want := range map[string]string{
		"jsonpath={.metadata.name} {.spec.type}":             "completion-target-7q relocate",
		"custom-columns=NAME:.metadata.name,TYPE:.spec.type": "NAME                   TYPE\ncompletion-target-7q   relocate",
		"name": "workflowtask.workflow.taskops.dev/completion-target-7q",
	} {
		out, err := exec.Command(pluginBin, "get", "completion-target-7q", "-n", "default", "-o", output, "--kubeconfig", cluster.Kubeconfig).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("get -o %s: %v\n%s\nwant:\n%s", output, err, out, want)
		}
	}
}
