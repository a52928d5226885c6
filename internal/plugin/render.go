package plugin

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// renderer draws the live view: Update with the rows of every watched task (in order), Close
// with the lines that end the watch.
type renderer interface {
	Update(rows []Row)
	Close(final []string)
}

// plainRenderer is the view for pipes and files: a line per change, no escape codes. Only a
// change of what a row shows prints it (a new value, phase or message), not the clock moving
// its rate and ETA.
type plainRenderer struct {
	out  io.Writer
	now  func() time.Time
	last map[string]string
}

func newPlainRenderer(out io.Writer, now func() time.Time) *plainRenderer {
	return &plainRenderer{out: out, now: now, last: map[string]string{}}
}

func (r *plainRenderer) Update(rows []Row) {
	present := map[string]bool{}
	for _, row := range rows {
		present[row.Key] = true
		sig := row.Text
		if row.Kind == RowEntry {
			sig = strconv.FormatInt(row.Current, 10) + "/" + strconv.FormatInt(row.Total, 10)
		}
		if prev, ok := r.last[row.Key]; ok && prev == sig {
			continue
		}
		r.last[row.Key] = sig
		what := row.Task
		if row.Kind == RowEntry {
			what += "  " + row.Label
		}
		fmt.Fprintf(r.out, "%s %s  %s\n", r.now().Format("15:04:05"), what, row.Text)
	}
	for key := range r.last {
		if !present[key] {
			delete(r.last, key)
		}
	}
}

func (r *plainRenderer) Close(final []string) {
	for _, l := range final {
		fmt.Fprintln(r.out, l)
	}
}

// ttyRenderer is the view for a terminal: an mpb container with a bar per row. Task headers
// and messages are bars without a filler (their decorator is the line); entries draw a bar,
// or a spinner while their total is unknown. Bars are made with total 0 so that mpb never
// completes one by itself (a finished entry can move again); SetTotal only sets what is drawn.
type ttyRenderer struct {
	p    *mpb.Progress
	out  io.Writer
	mu   sync.Mutex
	text map[string]string
	bars map[string]*ttyBar
}

type ttyBar struct {
	bar      *mpb.Bar
	kind     RowKind
	priority int
	// full: an entry at its known total, drawn full when the view closes.
	full bool
}

func newTTYRenderer(out io.Writer, width int) *ttyRenderer {
	return &ttyRenderer{
		p:    mpb.New(mpb.WithOutput(out), mpb.WithWidth(width), mpb.WithRefreshRate(200*time.Millisecond), mpb.WithAutoRefresh()),
		out:  out,
		text: map[string]string{},
		bars: map[string]*ttyBar{},
	}
}

// textOf is a decorator showing the latest text of a row.
func (r *ttyRenderer) textOf(key string, wc ...decor.WC) decor.Decorator {
	return decor.Any(func(decor.Statistics) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.text[key]
	}, wc...)
}

func (r *ttyRenderer) Update(rows []Row) {
	present := map[string]bool{}
	for i, row := range rows {
		present[row.Key] = true
		r.mu.Lock()
		switch row.Kind {
		case RowTask:
			r.text[row.Key] = row.Task + "  " + row.Text
		case RowMessage:
			r.text[row.Key] = "  ! " + row.Text
		default:
			r.text[row.Key] = row.Text
		}
		r.mu.Unlock()
		b, ok := r.bars[row.Key]
		if !ok || b.kind != row.Kind {
			if ok {
				b.bar.Abort(true)
			}
			bar, err := r.newBar(row, i)
			if err != nil { // the container is shut down: nothing more to draw
				return
			}
			b = &ttyBar{bar: bar, kind: row.Kind, priority: i}
			r.bars[row.Key] = b
		} else if b.priority != i {
			b.bar.SetPriority(i)
			b.priority = i
		}
		if row.Kind == RowEntry {
			b.bar.SetTotal(max(row.Total, 0), false)
			b.bar.SetCurrent(max(row.Current, 0))
			b.full = row.Total > 0 && row.Current >= row.Total
		}
	}
	for key, b := range r.bars {
		if !present[key] {
			b.bar.Abort(true)
			delete(r.bars, key)
			r.mu.Lock()
			delete(r.text, key)
			r.mu.Unlock()
		}
	}
}

func (r *ttyRenderer) newBar(row Row, priority int) (*mpb.Bar, error) {
	opts := []mpb.BarOption{mpb.BarPriority(priority)}
	if row.Kind != RowEntry {
		return r.p.Add(0, mpb.NopStyle().Build(), append(opts, mpb.PrependDecorators(r.textOf(row.Key)))...)
	}
	bar, spinner := mpb.BarStyle().Build(), mpb.SpinnerStyle().PositionLeft().Build()
	filler := mpb.BarFillerFunc(func(w io.Writer, st decor.Statistics) error {
		if st.Total > 0 {
			return bar.Fill(w, st)
		}
		return spinner.Fill(w, st)
	})
	return r.p.Add(0, filler, append(opts,
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return "  " + row.Label }, decor.WCSyncWidthR)),
		mpb.AppendDecorators(r.textOf(row.Key)))...)
}

func (r *ttyRenderer) Close(final []string) {
	for _, b := range r.bars {
		if b.full {
			b.bar.SetTotal(-1, true) // complete: drawn full
		} else {
			b.bar.Abort(false) // kept as it is
		}
	}
	r.p.Wait()
	for _, l := range final {
		fmt.Fprintln(r.out, l)
	}
}
