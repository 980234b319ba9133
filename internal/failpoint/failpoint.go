// Package failpoint owns the test hooks at the named steps of nixcell's
// multi-step changes ("create/allocated-ids", "start/network-ready", ...).
// In a normal build Hit does nothing. In a build with the tag failpoints,
// the environment drives it:
//
//	NIXCELL_FAILPOINT=NAME        Hit(NAME) returns an error
//	NIXCELL_FAILPOINT=NAME:kill   Hit(NAME) kills the process (SIGKILL)
//	NIXCELL_FAILPOINT_TRACE=FILE  every Hit appends its name to FILE
//
// so tests walk every step of an operation: run it once with a trace to
// learn its steps, then fail or kill it at each one and check that nothing
// is left claimed, mounted or written.
package failpoint

// ErrInjected is what Hit returns at the step a test chose to fail.
type ErrInjected struct{ Step string }

func (e *ErrInjected) Error() string { return "failpoint " + e.Step + ": failed on purpose" }
