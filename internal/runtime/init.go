// Package runtime owns running containers: it turns a container's settings
// into a libcontainer configuration, prepares the root file system a NixOS
// system expects, and starts, signals, enters, stops and destroys the
// container's processes. It is the only package that imports libcontainer.
//
// A detached container leaves no host process of its own behind: its init
// is reparented to the host's init once the starting command exits, and
// everything later commands need is found again from libcontainer's state
// directory. Its console is kept by the instance's console agent (package
// console), one process for all of them.
package runtime

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// The device controller registers itself; without it libcontainer
	// refuses configurations that have device rules.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's C constructor joins or creates the namespaces of a re-exec'd
	// init before the Go runtime starts.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// InitArg is the first argument with which libcontainer re-executes this
// binary as a container's init or exec'd process.
const InitArg = "init"

// IsInit tells whether this process was started by libcontainer as the
// first stage of a container process. libcontainer always passes the sync
// pipe in the environment, so a user typing "nixcell init" is not mistaken
// for it.
func IsInit() bool {
	return len(os.Args) > 1 && os.Args[1] == InitArg && os.Getenv("_LIBCONTAINER_INITPIPE") != ""
}

// Init runs libcontainer's container-side setup and then execs the
// container's process. It never returns.
func Init() {
	libcontainer.Init()
}
