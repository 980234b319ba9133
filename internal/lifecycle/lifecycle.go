// Package lifecycle owns the container state machine: which states a
// container can be in and which operations each state allows. It is pure;
// callers find the current state and ask Check before acting.
package lifecycle

import (
	"fmt"

	"github.com/nixcell/nixcell/internal/fault"
)

// State is a container's observable state.
type State string

const (
	// Creating: a create is under way or was interrupted.
	Creating State = "creating"
	// Stopped: created, init not running.
	Stopped State = "stopped"
	// Running: the init lives.
	Running State = "running"
	// Destroying: a destroy was interrupted; only destroy finishes it.
	Destroying State = "destroying"
)

// Op is an operation on an existing container.
type Op string

const (
	Start     Op = "start"
	Stop      Op = "stop"
	Terminate Op = "terminate"
	Restart   Op = "restart"
	Exec      Op = "exec"
	Login     Op = "login"
	Destroy   Op = "destroy"
	Update    Op = "update" // update, switch-generation, rollback, delete-generations
	Stats     Op = "stats"
	Signal    Op = "signal"
	Reload    Op = "reload" // switch the current generation in place
	// Copy reads the container's root and generations for a clone, a
	// snapshot or an export (a running one is frozen meanwhile), and
	// deletes its snapshots.
	Copy Op = "copy"
	// Restore brings back a snapshot (a running container is stopped
	// first and started again).
	Restore Op = "restore"
	// Checkpoint saves a running container's processes with CRIU and
	// stops it; RestoreCheckpoint brings them back.
	Checkpoint        Op = "checkpoint"
	RestoreCheckpoint Op = "restore-checkpoint"
)

// The reasons an operation is refused, by the state that refuses it; all
// of class fault.State.
var (
	ErrAlreadyRunning = fault.New(fault.State, "already running")
	ErrNotRunning     = fault.New(fault.State, "not running")
	ErrIncomplete     = fault.New(fault.State, "its creation did not finish")
	ErrDestroying     = fault.New(fault.State, "its destroy did not finish")
)

// TransitionError is an operation the state does not allow.
type TransitionError struct {
	State State
	Op    Op
	err   error
}

func (e *TransitionError) Error() string {
	switch e.err {
	case ErrAlreadyRunning:
		return "it is already running"
	case ErrNotRunning:
		return "it is not running (start it first)"
	case ErrIncomplete:
		return "its creation did not finish; run create again or destroy it"
	case ErrDestroying:
		return "its destroy did not finish; run destroy again"
	}
	return fmt.Sprintf("%s is not possible while %s", e.Op, e.State)
}

func (e *TransitionError) Unwrap() error { return e.err }

// allowed lists, for each state, the operations it allows; every other
// operation is refused, so a new operation is refused everywhere until a
// line here allows it. Destroy is allowed in every state (a running
// container is stopped first); Restart of a stopped container starts it.
var allowed = map[State][]Op{
	Creating:   {Destroy},
	Destroying: {Destroy},
	Stopped:    {Start, Restart, Destroy, Update, Copy, Restore, RestoreCheckpoint},
	Running:    {Stop, Terminate, Restart, Exec, Login, Destroy, Update, Stats, Signal, Reload, Copy, Restore, Checkpoint},
}

// refusal is why a state refuses what it does not allow.
var refusal = map[State]error{
	Creating:   ErrIncomplete,
	Destroying: ErrDestroying,
	Stopped:    ErrNotRunning,
	Running:    ErrAlreadyRunning,
}

// Check returns nil when op is allowed in state s, else a *TransitionError.
func Check(s State, op Op) error {
	ops, ok := allowed[s]
	if !ok {
		return &TransitionError{State: s, Op: op, err: fault.New(fault.State, fmt.Sprintf("unknown state %q", s))}
	}
	for _, o := range ops {
		if o == op {
			return nil
		}
	}
	return &TransitionError{State: s, Op: op, err: refusal[s]}
}
