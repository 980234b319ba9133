package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/nixcell/nixcell/internal/cell"
)

// progress is the progress of a long copy for a person watching: one
// line on stderr, rewritten in place, with the bytes done and the rate.
// It is shown only when stderr is a terminal and -q is not given.
type progress struct {
	w          io.Writer
	stage      string
	start, at  time.Time
	done       int64
	shownSince bool
}

// progress returns the progress display for a long copy, or nil.
func (a *app) progress() *progress {
	f, ok := a.stderr.(*os.File)
	if a.quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &progress{w: a.stderr}
}

// report is what cell calls; nil when there is nothing to show.
func (p *progress) report() cell.Progress {
	if p == nil {
		return nil
	}
	return p.update
}

func (p *progress) update(stage string, done int64) {
	now := time.Now()
	if stage != p.stage {
		p.finishLine()
		p.stage, p.start = stage, now
	}
	p.done = done
	if now.Sub(p.at) < 200*time.Millisecond {
		return
	}
	p.at = now
	p.show(now)
}

func (p *progress) show(now time.Time) {
	rate := ""
	if secs := now.Sub(p.start).Seconds(); secs > 0.05 {
		rate = ", " + cell.FormatBytes(int64(float64(p.done)/secs)) + "/s"
	}
	fmt.Fprintf(p.w, "\r\033[K%s: %s%s", p.stage, cell.FormatBytes(p.done), rate)
	p.shownSince = true
}

func (p *progress) finishLine() {
	if p.shownSince {
		p.show(time.Now())
		fmt.Fprintln(p.w)
		p.shownSince = false
	}
}

// end finishes the display before the result is printed.
func (p *progress) end() {
	if p != nil {
		p.finishLine()
	}
}
