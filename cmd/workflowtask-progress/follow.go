package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// Bounds of file mode.
const (
	// readBufferSize is the size of the one read buffer.
	readBufferSize = 64 << 10
	// maxReadPerSync bounds the bytes read before ctx is looked at again.
	maxReadPerSync = 64 << 20
	// maxReportedLines malformed lines of a file are reported one by one; later ones are
	// counted and summarized at most once per summaryEvery.
	maxReportedLines = 100
	summaryEvery     = 10 * time.Second
	// maxQuote bytes of a malformed line, and maxErrorText of its error, are shown.
	maxQuote     = 120
	maxErrorText = 200
)

// follow reads path from its start and then every line appended to it, until ctx ends; then
// it reads what is left (a last line without its newline included) and returns.
//
// The file is untrusted, so memory, work and output stay bounded whatever it holds:
//   - Memory is one read buffer and one line buffer of progress.MaxLineLength bytes. A line
//     longer than that (its newline excluded) is reported once, when it passes the limit, and
//     its bytes are dropped as they are read; the lines after it keep their numbers.
//   - Malformed lines (including binary garbage) are reported on stderr as
//     "PATH:LINE: skipped: ERROR: QUOTE" with at most 120 bytes of the line, quoted with Go
//     escapes, and skipped. Only the first 100 of a file (counted again after a truncation or
//     a replacement) are reported one by one; further ones are counted and reported as
//     "PATH: N more malformed lines skipped, the last at line L" at most every 10 s, and when
//     the file is left or follow returns.
//   - A path that does not exist yet, or is not a regular file (a FIFO, a directory, a device:
//     opening or reading them could block or never end), is waited for. At most 64 MiB are
//     read before ctx is looked at again (a file further behind is read on at once, without
//     waiting for the next poll), and at most 64 MiB more once ctx ended or the file was
//     replaced or deleted; what is left then is reported as not read.
//
// A file that is truncated is read again from its start. A file that is replaced (another file
// at path, e.g. renamed over it) or deleted is read to its end (its last line too) and left;
// the file at path, once there is one, is then read from its start. Line numbers count from 1
// in each file read. What was applied stays applied.
func follow(ctx context.Context, path string, r *progress.Reporter, stderr io.Writer, poll time.Duration) {
	newFollower(path, r, stderr).run(ctx, poll)
}

// follower is the state of follow.
type follower struct {
	path         string
	record       func(progress.Update) error // the reporter's Record
	stderr       io.Writer
	maxLine      int           // progress.MaxLineLength (smaller in tests)
	readPerSync  int64         // maxReadPerSync (smaller in tests)
	summaryEvery time.Duration // summaryEvery (smaller in tests)

	f       *os.File
	offset  int64  // bytes of f read
	lineNo  int    // lines of f completed
	buf     []byte // the read buffer
	line    []byte // the line being read; never more than maxLine bytes
	tooLong bool   // the line being read passed maxLine: its bytes are dropped

	reported    int // malformed lines of f reported one by one
	suppressed  int // malformed lines of f counted since the last summary
	lastSkipped int // the line number of the last of them
	lastSummary time.Time
	warnedKind  bool // "not a regular file" was said

	maxBuffered int    // the most bytes line ever held, for tests
	afterSync   func() // called after each poll's sync, for tests
}

func newFollower(path string, r *progress.Reporter, stderr io.Writer) *follower {
	return &follower{
		path: path, record: r.Record, stderr: stderr,
		maxLine: progress.MaxLineLength, readPerSync: maxReadPerSync, summaryEvery: summaryEvery,
		buf: make([]byte, readBufferSize),
	}
}

func (fl *follower) run(ctx context.Context, poll time.Duration) {
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		behind := fl.sync()
		if fl.afterSync != nil {
			fl.afterSync()
		}
		if behind > 0 && ctx.Err() == nil {
			continue
		}
		select {
		case <-ctx.Done():
			if left := fl.sync(); fl.f != nil {
				fl.finish(left)
			}
			return
		case <-t.C:
			t.Reset(poll)
		}
	}
}

// sync notices a truncated, replaced or deleted file, opens the file at path when none is
// open, and reads what was appended, at most readPerSync bytes. It returns how many bytes it
// left for the next call.
func (fl *follower) sync() (left int64) {
	if fl.f != nil {
		atPath, pathErr := os.Stat(fl.path)
		open, err := fl.f.Stat()
		switch {
		case err != nil: // cannot happen for an open file; start over
			fl.leave(false)
		case pathErr != nil || !os.SameFile(atPath, open): // deleted or replaced: read its end
			fl.finish(fl.drain())
		case open.Size() < fl.offset: // truncated: read it again from its start
			fl.leave(false)
		}
	}
	if fl.f == nil && !fl.open() {
		return 0
	}
	return fl.drain()
}

// open opens the file at path, only a regular file, and never blocks (a FIFO's open would
// wait for a writer).
func (fl *follower) open() bool {
	f, err := os.OpenFile(fl.path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close() // read only
		if err == nil && !fl.warnedKind {
			fl.warnedKind = true
			fmt.Fprintf(fl.stderr, "workflowtask-progress: %s is not a regular file (%v): waiting for one\n", fl.path, st.Mode().Type())
		}
		return false
	}
	fl.f = f
	return true
}

// finish leaves a file that is complete (replaced, deleted, or follow returns) after its last
// read, which left the given number of bytes unread.
func (fl *follower) finish(left int64) {
	if left > 0 {
		fmt.Fprintf(fl.stderr, "workflowtask-progress: %s: left with %d bytes not read, after line %d\n", fl.path, left, fl.lineNo)
	}
	fl.leave(left == 0)
}

// leave closes the open file, first taking its incomplete last line as a line when
// lastLine is set (nothing more is to be read of it).
func (fl *follower) leave(lastLine bool) {
	if lastLine && (len(fl.line) > 0 || fl.tooLong) {
		fl.endLine()
	}
	fl.summarize()
	_ = fl.f.Close() // read only
	fl.f, fl.offset, fl.lineNo, fl.line, fl.tooLong = nil, 0, 0, fl.line[:0], false
	fl.reported, fl.suppressed, fl.lastSkipped = 0, 0, 0
}

// drain reads the open file up to the size it has now, at most readPerSync bytes, and returns
// how many it left.
func (fl *follower) drain() (left int64) {
	st, err := fl.f.Stat()
	if err != nil {
		return 0
	}
	end := min(st.Size(), fl.offset+fl.readPerSync)
	left = st.Size() - end
	for fl.offset < end {
		n, err := fl.f.Read(fl.buf[:min(int64(len(fl.buf)), end-fl.offset)])
		fl.offset += int64(n)
		fl.consume(fl.buf[:n])
		if err != nil || n == 0 { // shrunk meanwhile (the next sync sees it) or unreadable
			left = 0 // the next poll tries again
			break
		}
	}
	if fl.suppressed > 0 && time.Since(fl.lastSummary) >= fl.summaryEvery {
		fl.summarize()
	}
	return left
}

// consume splits read bytes into lines.
func (fl *follower) consume(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			fl.add(p)
			return
		}
		fl.add(p[:i])
		fl.endLine()
		p = p[i+1:]
	}
}

// add appends bytes to the line being read, or drops them once it is too long.
func (fl *follower) add(p []byte) {
	if fl.tooLong || len(p) == 0 {
		return
	}
	if len(fl.line)+len(p) > fl.maxLine {
		fl.tooLong = true
		shown := append([]byte(nil), fl.line[:min(len(fl.line), maxQuote+1)]...)
		shown = append(shown, p[:min(len(p), maxQuote+1-len(shown))]...)
		fl.skipped(fl.lineNo+1, fmt.Sprintf("line longer than %d bytes", fl.maxLine), shown)
		fl.line = fl.line[:0]
		return
	}
	if fl.line == nil {
		fl.line = make([]byte, 0, fl.maxLine) // its only allocation: append never grows it
	}
	fl.line = append(fl.line, p...)
	fl.maxBuffered = max(fl.maxBuffered, len(fl.line))
}

// endLine applies the line just completed.
func (fl *follower) endLine() {
	fl.lineNo++
	if fl.tooLong { // reported when it passed the limit
		fl.tooLong = false
		return
	}
	if len(fl.line) == 0 {
		return
	}
	line := string(fl.line)
	fl.line = fl.line[:0]
	u, ok, err := progress.ParseLine(line)
	if err == nil && ok {
		err = fl.record(u)
	}
	if err != nil {
		fl.skipped(fl.lineNo, err.Error(), []byte(line))
	}
}

// skipped reports a malformed line, or counts it once maxReportedLines were reported.
func (fl *follower) skipped(lineNo int, why string, line []byte) {
	if fl.reported >= maxReportedLines {
		fl.suppressed++
		fl.lastSkipped = lineNo
		return
	}
	fl.reported++
	shown := string(line[:min(len(line), maxQuote)])
	if len(line) > maxQuote {
		shown += "…"
	}
	fmt.Fprintf(fl.stderr, "workflowtask-progress: %s:%d: skipped: %s: %s\n", fl.path, lineNo, printable(why, maxErrorText), strconv.Quote(shown))
	if fl.reported == maxReportedLines {
		fmt.Fprintf(fl.stderr, "workflowtask-progress: %s: %d malformed lines shown; further ones are only counted\n", fl.path, maxReportedLines)
	}
}

// summarize reports the malformed lines counted since the last summary.
func (fl *follower) summarize() {
	if fl.suppressed == 0 {
		return
	}
	fmt.Fprintf(fl.stderr, "workflowtask-progress: %s: %d more malformed lines skipped, the last at line %d\n", fl.path, fl.suppressed, fl.lastSkipped)
	fl.suppressed, fl.lastSummary = 0, time.Now()
}

// printable cuts s to at most n bytes and replaces what a terminal could take as control (and
// invalid UTF-8) with '?'. Parse errors quote the line's words already, but not in bounds.
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}
