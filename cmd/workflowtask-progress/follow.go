package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/taskops/workflowtask-operator/pkg/progress"
)

// follow reads path from its start and then every line appended to it, until ctx ends; then
// it reads what is left and returns. A file that does not exist yet is waited for; a file that
// shrinks (truncated or replaced) is read again from its start. Malformed lines are reported
// on stderr as PATH:LINE and skipped.
func follow(ctx context.Context, path string, r *progress.Reporter, stderr io.Writer, poll time.Duration) {
	var (
		f       *os.File
		reader  *bufio.Reader
		offset  int64
		lineNo  int
		partial []byte
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	report := func(line string) {
		lineNo++
		u, ok, err := progress.ParseLine(line)
		if err == nil && ok {
			err = r.Apply(u)
		}
		if err != nil {
			shown := line
			if len(shown) > 120 {
				shown = shown[:120] + "…"
			}
			fmt.Fprintf(stderr, "workflowtask-progress: %s:%d: skipped: %v: %s\n", path, lineNo, err, strconv.Quote(shown))
		}
	}
	drain := func() {
		for {
			chunk, err := reader.ReadSlice('\n')
			offset += int64(len(chunk))
			if len(partial)+len(chunk) <= progress.MaxLineLength+1 {
				partial = append(partial, chunk...)
			} else if partial != nil { // keep a marker that the line is too long
				partial = partial[:progress.MaxLineLength+1]
			}
			if err == nil {
				report(string(partial))
				partial = partial[:0]
				continue
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return // io.EOF: a partial line waits for its newline
			}
		}
	}
	for {
		if f == nil {
			if opened, err := os.Open(path); err == nil {
				f, reader = opened, bufio.NewReaderSize(opened, 64<<10)
			}
		}
		if f != nil {
			if st, err := f.Stat(); err == nil && st.Size() < offset { // truncated
				_, _ = f.Seek(0, io.SeekStart)
				reader.Reset(f)
				offset, lineNo, partial = 0, 0, partial[:0]
			}
			drain()
		}
		select {
		case <-ctx.Done():
			if f != nil {
				drain()
				if len(partial) > 0 { // a last line without its newline
					report(string(partial))
				}
			}
			return
		case <-time.After(poll):
		}
	}
}
