// Package console owns the consoles of detached containers. A container's
// init gets a terminal as its console (/dev/console and its standard
// streams), whose master side one agent process per instance keeps while
// the container runs: it copies what the container writes there to the
// container's console log, capped, and records how the init ended. The
// agent is started on demand by the first start that needs it and exits
// once it has kept no console for a while, as the name server does.
//
// The agent (agent.c) runs from a C constructor, before the Go runtime
// starts, in a process of the nixcell binary started with the arguments
// "console-agent SOCKET LOCK" and _NIXCELL_CONSOLE_AGENT=1: a small event
// loop whose memory stays about a megabyte however many containers run.
// Every program that links this package can be the agent.
package console

// #cgo CFLAGS: -Wall -O2
import "C"
