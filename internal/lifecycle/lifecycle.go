// Package lifecycle owns the container state machine: which states a
// container can be in and which operations each state allows. It is pure;
// callers find the current state and ask Check before acting.
package lifecycle

import (
	"errors"
	"fmt"
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
	Update    Op = "update"
	Stats     Op = "stats"
)

// Sentinel classes for errors.Is.
var (
	ErrAlreadyRunning = errors.New("already running")
	ErrNotRunning     = errors.New("not running")
	ErrIncomplete     = errors.New("its creation did not finish")
)

// TransitionError is an operation the state does not allow.
type TransitionError struct {
	State State
	Op    Op
	err   error
}

func (e *TransitionError) Error() string {
	switch {
	case e.err == ErrAlreadyRunning:
		return "it is already running"
	case e.err == ErrNotRunning:
		return "it is not running (start it first)"
	case e.err == ErrIncomplete:
		return "its creation did not finish; run create again or destroy it"
	}
	return fmt.Sprintf("%s is not possible while %s", e.Op, e.State)
}

func (e *TransitionError) Unwrap() error { return e.err }

// allowed maps each state to the operations it allows and, for the others,
// the reason they are refused.
var refused = map[State]map[Op]error{
	Creating: {Start: ErrIncomplete, Stop: ErrIncomplete, Terminate: ErrIncomplete, Restart: ErrIncomplete,
		Exec: ErrIncomplete, Login: ErrIncomplete, Update: ErrIncomplete, Stats: ErrIncomplete},
	Stopped: {Stop: ErrNotRunning, Terminate: ErrNotRunning, Exec: ErrNotRunning, Login: ErrNotRunning, Stats: ErrNotRunning},
	Running: {Start: ErrAlreadyRunning},
}

// Check returns nil when op is allowed in state s, else a *TransitionError.
// Destroy is allowed in every state: a running container is stopped first.
// Restart of a stopped container simply starts it.
func Check(s State, op Op) error {
	ops, ok := refused[s]
	if !ok {
		return &TransitionError{State: s, Op: op, err: fmt.Errorf("unknown state %q", s)}
	}
	if err := ops[op]; err != nil {
		return &TransitionError{State: s, Op: op, err: err}
	}
	return nil
}
