// Command nixcell runs NixOS system containers. When libcontainer re-executes
// it as a container's init, it does that and nothing else.
package main

import (
	"os"

	"github.com/nixcell/nixcell/internal/cli"
	"github.com/nixcell/nixcell/internal/runtime"
)

func main() {
	if runtime.IsInit() {
		runtime.Init() // never returns
	}
	os.Exit(cli.Main(os.Args[1:]))
}
