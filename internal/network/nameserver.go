package network

// The name server (nameserver.c) runs from a C constructor, before the Go
// runtime starts, in a process of the nixcell binary started with the
// arguments NameServer.Args and the environment variable NameServerEnv:
// an event loop that answers container names from the table nixcell writes
// (nametable.go), whose memory stays about a megabyte however many
// containers run. Every program that links this package can be the name
// server (its tests run it so).

// #cgo CFLAGS: -Wall -O2
import "C"

// NameServerEnv, in its environment, makes a process of the nixcell binary
// started with NameServer.Args the name server.
const NameServerEnv = "_NIXCELL_NAME_SERVER=1"

// NameServer is an instance's name server: one process while containers
// of the instance run, listening on port 53 of the bridges' addresses.
type NameServer struct {
	// Table is what it serves (WriteNameTable); it leaves when the table
	// says nothing runs or is gone.
	Table string
	// Lock is held while it runs (one server per instance); it removes
	// it as it leaves, and Table's directory when that is left empty,
	// under GlobalLock (which every writer of that directory holds).
	Lock, GlobalLock string
}

// Args are the arguments after the program's name that, with
// NameServerEnv, make a process of the nixcell binary this name server. A
// second one for the same Lock exits at once.
func (s NameServer) Args() []string {
	return []string{"name-server", s.Table, s.Lock, s.GlobalLock}
}
