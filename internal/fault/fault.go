// Package fault owns nixcell's error classes. Every package declares its
// sentinel errors in one of these classes (fault.New), and callers decide
// by class, not by message: the CLI maps each class to an exit status in
// one table, the Nomad driver to Nomad's outcomes, and tests match
// errors.Is(err, fault.NotFound). It is pure and imports nothing of
// nixcell's.
package fault

import (
	"errors"
	"syscall"
)

// Class is a kind of failure. It is an error itself, so that
// errors.Is(err, class) tells whether err is of that class.
type Class string

func (c Class) Error() string { return string(c) }

// The classes. A new one needs a line in the CLI's exit status table.
const (
	// Usage: the request itself is malformed (a bad name, options that do
	// not go together, a missing argument): nothing was looked at.
	Usage Class = "bad request"
	// Invalid: a configuration or setting is invalid.
	Invalid Class = "invalid"
	// NotFound: no such container (or generation, or other named thing).
	NotFound Class = "not found"
	// Exists: it exists already.
	Exists Class = "exists"
	// State: the container's state does not allow the operation (it runs,
	// it does not, its creation did not finish).
	State Class = "state"
	// Conflict: another container holds what was asked for (an address, a
	// host port), or another command holds the lock.
	Conflict Class = "conflict"
	// Exhausted: no free address or ID range is left, or no space on a
	// file system (ENOSPC, or EDQUOT: a quota's).
	Exhausted Class = "exhausted"
	// Unsupported: the host lacks a kernel feature or program.
	Unsupported Class = "unsupported"
	// Nix: evaluating or building with Nix failed (its output says why).
	Nix Class = "nix"
	// Switch: a generation's switch-to-configuration failed inside the
	// container.
	Switch Class = "switch"
	// NotReady: the container did not become ready in time.
	NotReady Class = "not ready"
)

// Classes lists every class, for tables that must cover them all.
var Classes = []Class{Usage, Invalid, NotFound, Exists, State, Conflict, Exhausted, Unsupported, Nix, Switch, NotReady}

// sentinel is an error of a class with its own message.
type sentinel struct {
	class Class
	msg   string
}

func (e *sentinel) Error() string        { return e.msg }
func (e *sentinel) Is(target error) bool { return target == e.class }

// New returns a sentinel error with message msg, of class c: errors.Is
// holds for it, and for whatever wraps it, with both the sentinel and c.
func New(c Class, msg string) error { return &sentinel{class: c, msg: msg} }

// Of returns the class of err, and false when it has none (an unexpected
// failure: a system call, a file that cannot be read).
func Of(err error) (Class, bool) {
	for _, c := range Classes {
		if errors.Is(err, c) {
			return c, true
		}
	}
	if NoSpace(err) {
		return Exhausted, true
	}
	return "", false
}

// NoSpace tells whether err is a file system's lack of space: ENOSPC, or
// EDQUOT (a quota's).
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
