// Package undo owns how a change of several steps is taken back when one
// of them fails: each step that finishes pushes its inverse on a Stack;
// when a later step fails, the inverses run newest first; when the change
// succeeds, they are dropped. Every multi-step change of nixcell (create,
// update, start, the runtime's create, network changes) is written this
// way, so a failure leaves nothing claimed, mounted or written.
package undo

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Stack holds the inverses of the finished steps of one change. The zero
// value is an empty stack. It is not safe for concurrent use.
type Stack struct {
	steps []step
}

type step struct {
	what string
	undo func(context.Context) error
}

// Push records the inverse of a step that has just finished; what names
// the step in error messages ("releasing the ID range").
func (s *Stack) Push(what string, undo func(context.Context) error) {
	s.steps = append(s.steps, step{what, undo})
}

// cleanupTimeout bounds an unwind: cleanup must finish after the user
// interrupted the command, but not hang for ever.
const cleanupTimeout = time.Minute

// Unwind runs every inverse, newest first, and empties the stack. It runs
// them all even when one fails, and even when ctx is already cancelled
// (an interrupted command still cleans up); it returns their errors
// joined, each naming its step.
func (s *Stack) Unwind(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		if err := s.steps[i].undo(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.steps[i].what, err))
		}
	}
	s.steps = nil
	return errors.Join(errs...)
}

// Release drops every inverse: the change succeeded.
func (s *Stack) Release() { s.steps = nil }

// OnError unwinds the stack when *errp holds an error and reports what the
// unwinding could not undo to warn; otherwise it releases the stack. It is
// meant for a defer at the top of a change:
//
//	var u undo.Stack
//	defer u.OnError(ctx, &retErr, m.warnf)
func (s *Stack) OnError(ctx context.Context, errp *error, warn func(format string, args ...any)) {
	if *errp == nil {
		s.Release()
		return
	}
	if err := s.Unwind(ctx); err != nil && warn != nil {
		warn("undoing the failed change: %v", err)
	}
}
