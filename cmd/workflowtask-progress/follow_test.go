package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"k8s.io/client-go/rest"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

type entry struct {
	Current, Total int64
	Identifier     string
}

// testReporter is a real Reporter, for a server that is never reached (its writes fail and are
// retried in the background; the tests read what it holds), and a function that returns the
// entries it holds: what the follower applied, with the Reporter's own rules.
func testReporter(t testing.TB) (*progress.Reporter, func() map[string]entry) {
	t.Helper()
	r, err := progress.New(progress.Options{Config: &rest.Config{Host: "http://127.0.0.1:1"}, Namespace: "ns", Task: "t",
		UID: "uid-1", FieldManager: "test", Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = r.Close(ctx) // nothing reaches the unreachable server: the error is expected
	})
	return r, func() map[string]entry {
		out := map[string]entry{}
		for typ, v := range r.Values() {
			out[typ] = entry{v.Current, v.Total, v.Identifier}
		}
		return out
	}
}

// followAll runs follow over a complete file: with ctx ended already, it reads the file to its
// end, last line included, and returns.
func followAll(t testing.TB, path string, r *progress.Reporter, configure ...func(*follower)) (string, *follower) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	fl := newFollower(path, r, &stderr)
	for _, c := range configure {
		c(fl)
	}
	done := make(chan struct{})
	go func() { defer close(done); fl.run(ctx, time.Millisecond) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("follow did not return")
	}
	return stderr.String(), fl
}

// skippedLines are the line numbers stderr reports one by one.
func skippedLines(path, stderr string) []int {
	var out []int
	re := regexp.MustCompile(`(?m)^workflowtask-progress: ` + regexp.QuoteMeta(path) + `:(\d+): skipped: `)
	for _, m := range re.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// checkSafeOutput fails when stderr holds what a terminal or a log reader could misread:
// invalid UTF-8, control characters, or overlong lines.
func checkSafeOutput(t testing.TB, stderr string) {
	t.Helper()
	if !utf8.ValidString(stderr) {
		t.Errorf("stderr is not valid UTF-8: %q", stderr)
	}
	for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if len(line) > 1024 {
			t.Errorf("stderr line of %d bytes: %.200q…", len(line), line)
		}
		if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }) {
			t.Errorf("stderr line with a control character: %q", line)
		}
	}
}

func TestFollowCompleteFile(t *testing.T) {
	limit := progress.MaxLineLength
	var many strings.Builder
	for i := 1; i <= 100000; i++ {
		fmt.Fprintf(&many, "upload %d/100000\n", i)
	}
	var manyTypes strings.Builder
	manyTypesWant := map[string]entry{}
	for i := range progress.MaxEntries + 2 {
		fmt.Fprintf(&manyTypes, "type_%d %d\n", i, i)
		if i < progress.MaxEntries {
			manyTypesWant[fmt.Sprintf("type_%d", i)] = entry{int64(i), 0, ""}
		}
	}
	cases := map[string]struct {
		content string
		want    map[string]entry
		skipped []int    // line numbers reported
		inErr   []string // also in stderr
	}{
		"empty file": {content: "", want: map[string]entry{}},
		"only blank lines and comments": {
			content: "\n\n# comment\n \t \r\n", want: map[string]entry{},
		},
		"70,000-character line between two valid lines": {
			content: "upload 1/10\n" + strings.Repeat("x", 70000) + "\nimported 2/5\n",
			want:    map[string]entry{"upload": {1, 10, ""}, "imported": {2, 5, ""}},
			skipped: []int{2}, inErr: []string{fmt.Sprintf("line longer than %d bytes", limit), `"` + strings.Repeat("x", 120) + `…"`},
		},
		"5 MB line between two valid lines": {
			content: "upload 1/10\n" + strings.Repeat("y", 5<<20) + "\nimported 2/5\n",
			want:    map[string]entry{"upload": {1, 10, ""}, "imported": {2, 5, ""}},
			skipped: []int{2},
		},
		"later lines keep their numbers": {
			content: "upload 1/10\n" + strings.Repeat("a", 3*limit) + "\nnot progress\n" + strings.Repeat("b", limit+1) + "\n\nbad 1/x\nupload 2/10\n" + strings.Repeat("c", limit+1),
			want:    map[string]entry{"upload": {2, 10, ""}},
			skipped: []int{2, 3, 4, 6, 8},
		},
		"a line of exactly MaxLineLength bytes is read": {
			content: strings.Repeat(" ", limit-len("upload 3/4")) + "upload 3/4\n",
			want:    map[string]entry{"upload": {3, 4, ""}},
		},
		"a too-long line is not applied even if its start is valid": {
			content: "upload 9/9" + strings.Repeat(" ", limit) + "x\nimported 1\n",
			want:    map[string]entry{"imported": {1, 0, ""}},
			skipped: []int{1},
		},
		"binary garbage": {
			content: "upload 1/10\n\x00\x00\x00\n\xff\xfe\xfd invalid utf-8\n\x1b[31mred\x1b[0m 1/2\n\r\r\r\n\x07\x08\x7f\u202e 3/4\nup\x00load 5/6\nimported 7/8\n",
			want:    map[string]entry{"upload": {1, 10, ""}, "imported": {7, 8, ""}},
			skipped: []int{2, 3, 4, 6, 7},
		},
		"garbage in a valid line's identifier is kept, quoted in JSON": {
			content: "upload 1/2 /dst/\x01a\n",
			want:    map[string]entry{"upload": {1, 2, "/dst/\x01a"}},
		},
		"CRLF line ends": {
			content: "upload 1/2\r\nimported 3/4\r\n",
			want:    map[string]entry{"upload": {1, 2, ""}, "imported": {3, 4, ""}},
		},
		"a last line without its newline": {
			content: "upload 1/10\nimported 4/5",
			want:    map[string]entry{"upload": {1, 10, ""}, "imported": {4, 5, ""}},
		},
		"a too-long last line without its newline": {
			content: "upload 1/10\n" + strings.Repeat("z", 2*limit),
			want:    map[string]entry{"upload": {1, 10, ""}},
			skipped: []int{2},
		},
		"more types than a task holds": {
			content: manyTypes.String(),
			want:    manyTypesWant,
			skipped: []int{progress.MaxEntries + 1, progress.MaxEntries + 2}, inErr: []string{"at most 128 types"},
		},
		"very many lines": {
			content: many.String(),
			want:    map[string]entry{"upload": {100000, 100000, ""}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "progress")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			r, entries := testReporter(t)
			stderr, fl := followAll(t, path, r)
			if got := entries(); !maps.Equal(got, tc.want) {
				t.Errorf("entries %+v, want %+v", got, tc.want)
			}
			if got := skippedLines(path, stderr); !slices.Equal(got, tc.skipped) {
				t.Errorf("skipped lines %v, want %v; stderr:\n%s", got, tc.skipped, stderr)
			}
			if n := strings.Count(stderr, "\n"); n != len(tc.skipped) {
				t.Errorf("%d lines on stderr, want %d:\n%s", n, len(tc.skipped), stderr)
			}
			for _, want := range tc.inErr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%.2000s", want, stderr)
				}
			}
			checkSafeOutput(t, stderr)
			if fl.maxBuffered > progress.MaxLineLength || cap(fl.line) > progress.MaxLineLength {
				t.Errorf("line buffer held %d bytes (capacity %d), more than %d", fl.maxBuffered, cap(fl.line), progress.MaxLineLength)
			}
		})
	}
}

// A flood of malformed lines gives maxReportedLines reports, a notice, and a count.
func TestFollowBoundsReports(t *testing.T) {
	const bad = 100000
	path := filepath.Join(t.TempDir(), "progress")
	content := strings.Repeat("this is not progress\n", bad) + "upload 1/2\n" + strings.Repeat("\x00\n", 10)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	r, entries := testReporter(t)
	stderr, _ := followAll(t, path, r)
	if got := entries(); got["upload"] != (entry{1, 2, ""}) {
		t.Errorf("entries %+v", got)
	}
	reported := skippedLines(path, stderr)
	if len(reported) != maxReportedLines || reported[0] != 1 || reported[maxReportedLines-1] != maxReportedLines {
		t.Errorf("reported lines %v, want 1 to %d", reported, maxReportedLines)
	}
	if !strings.Contains(stderr, fmt.Sprintf("%s: %d malformed lines shown; further ones are only counted\n", path, maxReportedLines)) {
		t.Errorf("no notice that further lines are only counted")
	}
	// One poll read the whole file: one summary, with every line not shown, and the last.
	summary := fmt.Sprintf("%s: %d more malformed lines skipped, the last at line %d\n", path, bad+10-maxReportedLines, bad+11)
	if !strings.Contains(stderr, summary) {
		t.Errorf("stderr lacks %q:\n%s", summary, stderr[max(0, len(stderr)-500):])
	}
	if n := strings.Count(stderr, "\n"); n != maxReportedLines+2 {
		t.Errorf("%d lines on stderr, want %d", n, maxReportedLines+2)
	}
	checkSafeOutput(t, stderr)
}

// liveFollower runs follow in the background on a file the test changes. settle waits until
// the follower has looked at the file twice since it was called: everything done before has
// been seen, however slowly the machine runs.
type liveFollower struct {
	t       *testing.T
	path    string
	fl      *follower
	syncs   atomic.Int64
	stderr  lockedBuffer
	entries func() map[string]entry
	cancel  context.CancelFunc
	done    chan struct{}
}

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

func startFollower(t *testing.T, path string, poll time.Duration, configure ...func(*follower)) *liveFollower {
	t.Helper()
	l := &liveFollower{t: t, path: path, done: make(chan struct{})}
	var r *progress.Reporter
	r, l.entries = testReporter(t)
	l.fl = newFollower(path, r, &l.stderr)
	for _, c := range configure {
		c(l.fl)
	}
	l.fl.afterSync = func() { l.syncs.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { defer close(l.done); l.fl.run(ctx, poll) }()
	t.Cleanup(l.stop)
	return l
}

func (l *liveFollower) settle() {
	l.t.Helper()
	l.waitSyncs(l.syncs.Load() + 2)
}

// waitSyncs waits until the follower synced n times in all.
func (l *liveFollower) waitSyncs(target int64) {
	l.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for l.syncs.Load() < target {
		select {
		case <-l.done:
			l.t.Fatal("follow returned")
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.t.Fatal("follow is stuck")
		}
	}
}

// stop ends ctx and waits for follow to return.
func (l *liveFollower) stop() {
	l.t.Helper()
	l.cancel()
	select {
	case <-l.done:
	case <-time.After(time.Minute):
		l.t.Fatal("follow did not return after its context ended")
	}
}

func write(t *testing.T, path, content string, flag int) {
	t.Helper()
	f, err := os.OpenFile(path, flag|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A file followed while it is created, appended to, truncated, replaced, deleted and created
// again, and finally deleted for good.
func TestFollowFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "progress")
	l := startFollower(t, path, time.Millisecond)
	steps := []struct {
		name    string
		do      func()
		want    map[string]entry
		skipped []int // line numbers reported by this step
	}{
		{"not created yet", func() {}, map[string]entry{}, nil},
		{"created", func() { write(t, path, "upload 1/10\nbad line\n", os.O_CREATE|os.O_EXCL) },
			map[string]entry{"upload": {1, 10, ""}}, []int{2}},
		{"appended, a line without its newline yet", func() { write(t, path, "upload 2/10\nimported 5", os.O_APPEND) },
			map[string]entry{"upload": {2, 10, ""}}, nil},
		{"the line completed", func() { write(t, path, "/7\n", os.O_APPEND) },
			map[string]entry{"upload": {2, 10, ""}, "imported": {5, 7, ""}}, nil},
		{"truncated: read from the start, lines numbered from 1", func() { write(t, path, "junk\nupload 3/10\n", os.O_TRUNC) },
			map[string]entry{"upload": {3, 10, ""}, "imported": {5, 7, ""}}, []int{1}},
		{"appended to, then replaced by rename: the old file is read to its end first", func() {
			write(t, path, "imported 6/7\nindexed 99", os.O_APPEND) // the last line of the old file
			write(t, path+".new", "upload 4/10\n\x00\x01garbage\n", os.O_CREATE|os.O_EXCL)
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}, map[string]entry{"upload": {4, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, []int{2}},
		{"deleted: what was applied stays", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, map[string]entry{"upload": {4, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, nil},
		{"created again: read from its start", func() { write(t, path, "bad\nupload 5/10\n", os.O_CREATE|os.O_EXCL) },
			map[string]entry{"upload": {5, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, []int{1}},
		{"a giant line growing without a newline", func() {
			for range 20 {
				write(t, path, strings.Repeat("g", 100<<10), os.O_APPEND)
				l.settle()
			}
		}, map[string]entry{"upload": {5, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, []int{3}},
		{"its newline and a line after it", func() { write(t, path, "\nupload 6/10\n", os.O_APPEND) },
			map[string]entry{"upload": {6, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, nil},
		{"deleted for good", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, map[string]entry{"upload": {6, 10, ""}, "imported": {6, 7, ""}, "indexed": {99, 0, ""}}, nil},
	}
	for _, s := range steps {
		before := len(l.stderr.String())
		s.do()
		l.settle()
		if got := l.entries(); !maps.Equal(got, s.want) {
			t.Errorf("%s: entries %+v, want %+v", s.name, got, s.want)
		}
		stderr := l.stderr.String()[before:]
		if got := skippedLines(path, stderr); !slices.Equal(got, s.skipped) {
			t.Errorf("%s: skipped lines %v, want %v; stderr:\n%s", s.name, got, s.skipped, stderr)
		}
		if n := strings.Count(stderr, "\n"); n != len(s.skipped) {
			t.Errorf("%s: %d lines on stderr, want %d:\n%s", s.name, n, len(s.skipped), stderr)
		}
	}
	l.stop()
	checkSafeOutput(t, l.stderr.String())
	if l.fl.maxBuffered > progress.MaxLineLength {
		t.Errorf("line buffer held %d bytes", l.fl.maxBuffered)
	}
}

func TestFollowNeverCreated(t *testing.T) {
	l := startFollower(t, filepath.Join(t.TempDir(), "progress"), time.Millisecond)
	for range 10 {
		l.settle()
	}
	l.stop()
	if got := l.entries(); len(got) != 0 {
		t.Errorf("entries %+v", got)
	}
	if s := l.stderr.String(); s != "" {
		t.Errorf("stderr %q", s)
	}
}

// 50 MB without a newline, written while it is followed, go through a line buffer that never
// holds more than MaxLineLength bytes.
func TestFollowBoundedMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "progress")
	l := startFollower(t, path, time.Millisecond)
	write(t, path, "upload 1/2\n", os.O_CREATE|os.O_EXCL)
	chunk := strings.Repeat("m", 1<<20)
	for i := range 50 {
		write(t, path, chunk, os.O_APPEND)
		if i%10 == 9 {
			l.settle()
		}
	}
	write(t, path, "\nupload 2/2\n", os.O_APPEND)
	l.settle()
	l.stop()
	if l.fl.maxBuffered > progress.MaxLineLength || cap(l.fl.line) > progress.MaxLineLength {
		t.Errorf("line buffer held %d bytes (capacity %d), more than %d", l.fl.maxBuffered, cap(l.fl.line), progress.MaxLineLength)
	}
	if len(l.fl.buf) != readBufferSize {
		t.Errorf("read buffer of %d bytes", len(l.fl.buf))
	}
	if got := l.entries(); got["upload"] != (entry{2, 2, ""}) {
		t.Errorf("entries %+v", got)
	}
	if got := skippedLines(path, l.stderr.String()); !slices.Equal(got, []int{2}) {
		t.Errorf("skipped lines %v, want [2]", got)
	}
}

// A file far behind is read in steps of readPerSync, one after the other without waiting for
// the next poll; once ctx ended, one step more is read and the rest reported as not read.
func TestFollowReadsInBoundedSteps(t *testing.T) {
	const step = 1 << 20
	path := filepath.Join(t.TempDir(), "progress")
	content := "upload 1/3\n" + strings.Repeat("\x00", 5*step) + "\nupload 2/3\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	small := func(fl *follower) { fl.readPerSync = step }

	t.Run("following", func(t *testing.T) {
		l := startFollower(t, path, time.Hour, small) // the poll never fires
		l.waitSyncs((int64(len(content)) + step - 1) / step)
		if got := l.entries(); got["upload"] != (entry{2, 3, ""}) {
			t.Errorf("entries %+v", got)
		}
		l.stop()
		if got := skippedLines(path, l.stderr.String()); !slices.Equal(got, []int{2}) {
			t.Errorf("skipped lines %v, want [2]; stderr:\n%s", got, l.stderr.String())
		}
	})
	t.Run("at the end", func(t *testing.T) {
		r, entries := testReporter(t)
		stderr, _ := followAll(t, path, r, small)
		if got := entries(); !maps.Equal(got, map[string]entry{"upload": {1, 3, ""}}) {
			t.Errorf("entries %+v", got)
		}
		want := fmt.Sprintf("workflowtask-progress: %s: left with %d bytes not read, after line 1\n", path, len(content)-2*step)
		if !strings.Contains(stderr, want) || len(skippedLines(path, stderr)) != 1 {
			t.Errorf("stderr %q, want line 2 skipped and %q", stderr, want)
		}
	})
}

// A FIFO at the path is not opened for reading: its open and its reads could block.
func TestFollowNotARegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "progress")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skip("no FIFO:", err)
	}
	r, entries := testReporter(t)
	stderr, _ := followAll(t, path, r)
	if !strings.Contains(stderr, "not a regular file") {
		t.Errorf("stderr %q", stderr)
	}
	if got := entries(); len(got) != 0 {
		t.Errorf("entries %+v", got)
	}
}

// reference reads data the simple way: split at newlines, skip lines longer than maxLine,
// parse the others. It returns the updates of the valid lines in order, and the numbers of
// the malformed lines.
func reference(data []byte, maxLine int) ([]progress.Update, []int) {
	lines := bytes.Split(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	var (
		updates []progress.Update
		bad     []int
	)
	for i, line := range lines {
		if len(line) > maxLine {
			bad = append(bad, i+1)
			continue
		}
		u, ok, err := progress.ParseLine(string(line))
		switch {
		case err != nil:
			bad = append(bad, i+1)
		case ok:
			updates = append(updates, u)
		}
	}
	return updates, bad
}

var summaryLine = regexp.MustCompile(`^workflowtask-progress: .*: (\d+) more malformed lines skipped, the last at line (\d+)$`)

// FuzzFollow follows a file of arbitrary bytes, once with the real limits and once with a
// tiny line limit and read buffer (so that long lines and split reads are common), and
// compares with reference: exactly the updates of the valid lines, in order, are applied, and
// exactly the malformed lines are reported, by number. (The follower's apply is recorded here
// instead of going to a Reporter: the other tests use a real one.)
func FuzzFollow(f *testing.F) {
	for _, seed := range []string{
		"", "\n", "upload 1/2\n", "upload 1/2", "upload 1/2 /dst/a b\nimported 3\ndelete upload\n",
		`{"type":"upload","current":1,"total":2,"identifier":"x"}` + "\n",
		"upload 1/10\n" + strings.Repeat("x", 70000) + "\nnot progress\nimported 2/5\n",
		"upload 1/10\n" + strings.Repeat("long ", 5) + "\nbad\nimported 2/5\n",
		"upload 9/9" + strings.Repeat(" ", progress.MaxLineLength) + "x\n",
		"\x00\xff\r\n\x1b[2J upload 1/2\r\nupload 3/4\r\n",
		strings.Repeat("bad\n", 150) + "upload 1/1\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "progress")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, lim := range []struct{ maxLine, buf int }{{progress.MaxLineLength, readBufferSize}, {16, 7}} {
			want, bad := reference(data, lim.maxLine)
			var got []progress.Update
			stderr, fl := followAll(t, path, nil, func(fl *follower) {
				fl.maxLine, fl.buf = lim.maxLine, make([]byte, lim.buf)
				fl.record = func(u progress.Update) error { got = append(got, u); return nil }
			})
			if !slices.Equal(got, want) {
				t.Errorf("limits %+v: applied %+v, want %+v", lim, got, want)
			}
			shown := bad[:min(len(bad), maxReportedLines)]
			if got := skippedLines(path, stderr); !slices.Equal(got, shown) {
				t.Errorf("limits %+v: reported lines %v, want %v", lim, got, shown)
			}
			counted, last := 0, 0
			for _, line := range strings.Split(stderr, "\n") {
				if m := summaryLine.FindStringSubmatch(line); m != nil {
					n, _ := strconv.Atoi(m[1])
					counted += n
					last, _ = strconv.Atoi(m[2])
				}
			}
			if counted != len(bad)-len(shown) || (counted > 0 && last != bad[len(bad)-1]) {
				t.Errorf("limits %+v: %d lines counted, the last %d; want %d of %v", lim, counted, last, len(bad)-len(shown), bad)
			}
			checkSafeOutput(t, stderr)
			if fl.maxBuffered > lim.maxLine || cap(fl.line) > lim.maxLine {
				t.Errorf("limits %+v: line buffer held %d bytes (capacity %d)", lim, fl.maxBuffered, cap(fl.line))
			}
		}
	})
}
