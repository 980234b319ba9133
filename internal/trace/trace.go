// Package trace owns the timing of a command's phases (nixcell start
// --trace, or NIXCELL_TRACE=1): each layer marks where a phase ends, and
// the trace prints each phase with its duration, so a user sees where a
// start's time goes. A nil *Trace marks nothing and costs nothing.
package trace

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Trace prints the phases of one command to its writer.
type Trace struct {
	mu          sync.Mutex
	w           io.Writer
	begin, last time.Time
}

// New starts a trace that prints to w.
func New(w io.Writer) *Trace {
	now := time.Now()
	return &Trace{w: w, begin: now, last: now}
}

// Mark ends the phase named phase: it prints how long it took since the
// previous mark.
func (t *Trace) Mark(phase string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	fmt.Fprintf(t.w, "trace: %-28s %8.2f ms\n", phase, float64(now.Sub(t.last).Microseconds())/1000)
	t.last = now
}

// Beside starts a phase that runs beside the marked ones, on another
// goroutine; the function it returns ends it and prints its duration
// (the name ends in "(beside)") without ending the current phase.
func (t *Trace) Beside(phase string) (end func()) {
	if t == nil {
		return func() {}
	}
	begin := time.Now()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		fmt.Fprintf(t.w, "trace: %-28s %8.2f ms\n", phase+" (beside)", float64(time.Since(begin).Microseconds())/1000)
	}
}

// Done prints the total.
func (t *Trace) Done() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "trace: %-28s %8.2f ms\n", "total", float64(time.Since(t.begin).Microseconds())/1000)
}

type key struct{}

// With returns ctx carrying t.
func With(ctx context.Context, t *Trace) context.Context { return context.WithValue(ctx, key{}, t) }

// From returns the trace ctx carries, or nil.
func From(ctx context.Context) *Trace {
	t, _ := ctx.Value(key{}).(*Trace)
	return t
}
