package undo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestUnwindNewestFirstAndAll(t *testing.T) {
	var s Stack
	var order []string
	for _, name := range []string{"a", "b", "c"} {
		s.Push("step "+name, func(context.Context) error {
			order = append(order, name)
			if name == "b" {
				return errors.New("b failed")
			}
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // an interrupted command still cleans up
	err := s.Unwind(ctx)
	if got := strings.Join(order, ""); got != "cba" {
		t.Errorf("undid %q, want cba", got)
	}
	if err == nil || err.Error() != "step b: b failed" {
		t.Errorf("Unwind = %v, want the failed step named", err)
	}
	if err := s.Unwind(context.Background()); err != nil || len(order) != 3 {
		t.Errorf("a second Unwind ran again: %v, %v", err, order)
	}
}

func TestUnwindContextLives(t *testing.T) {
	var s Stack
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Push("check", func(ctx context.Context) error { return ctx.Err() })
	if err := s.Unwind(ctx); err != nil {
		t.Errorf("the undo got a cancelled context: %v", err)
	}
}

func TestOnError(t *testing.T) {
	var warned []string
	warn := func(format string, args ...any) { warned = append(warned, format) }
	run := func(fail bool) (undone bool) {
		var s Stack
		s.Push("x", func(context.Context) error { undone = true; return errors.New("stuck") })
		err := error(nil)
		if fail {
			err = errors.New("later step failed")
		}
		s.OnError(context.Background(), &err, warn)
		return undone
	}
	if run(false) {
		t.Error("a change that succeeded was undone")
	}
	if !run(true) {
		t.Error("a change that failed was not undone")
	}
	if len(warned) != 1 {
		t.Errorf("warnings: %v, want the undo's failure", warned)
	}
}
