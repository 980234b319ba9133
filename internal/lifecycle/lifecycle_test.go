package lifecycle

import (
	"errors"
	"testing"

	"github.com/nixcell/nixcell/internal/fault"
)

func TestCheck(t *testing.T) {
	all := []Op{Start, Stop, Terminate, Restart, Exec, Login, Destroy, Update, Stats, Signal, Reload, Copy, Restore, Checkpoint, RestoreCheckpoint, "some-new-op"}
	allowed := map[State][]Op{
		Creating:   {Destroy},
		Destroying: {Destroy},
		Stopped:    {Start, Restart, Destroy, Update, Copy, Restore, RestoreCheckpoint},
		Running:    {Stop, Terminate, Restart, Exec, Login, Destroy, Update, Stats, Signal, Reload, Copy, Restore, Checkpoint},
	}
	for st, ok := range allowed {
		okSet := map[Op]bool{}
		for _, op := range ok {
			okSet[op] = true
		}
		for _, op := range all {
			err := Check(st, op)
			if okSet[op] != (err == nil) {
				t.Errorf("Check(%s, %s) = %v, want allowed=%v", st, op, err, okSet[op])
			}
			var te *TransitionError
			if err != nil && !errors.As(err, &te) {
				t.Errorf("Check(%s, %s) = %T, want *TransitionError", st, op, err)
			}
		}
	}
	if err := Check(Running, Start); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("start while running: %v, want ErrAlreadyRunning", err)
	}
	if err := Check(Stopped, Exec); !errors.Is(err, ErrNotRunning) || err.Error() != "it is not running (start it first)" {
		t.Errorf("exec while stopped: %v", err)
	}
	if err := Check(Creating, Start); !errors.Is(err, ErrIncomplete) {
		t.Errorf("start while creating: %v, want ErrIncomplete", err)
	}
	if err := Check("bogus", Start); err == nil {
		t.Error("unknown state allowed start")
	}
	for _, st := range []State{Creating, Destroying, Stopped, Running} {
		if err := Check(st, "some-new-op"); !errors.Is(err, fault.State) {
			t.Errorf("an operation no state allows, in %s: %v, want a refusal of class fault.State", st, err)
		}
	}
}
