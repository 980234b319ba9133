// Command nomad-driver-nixcell is a Nomad task driver plugin that runs
// nixcell containers (see README.md). Nomad starts it without arguments.
// With arguments it is nixcell's command line (for example
// `nomad-driver-nixcell --state-dir /var/lib/nixcell-nomad list`): that is
// also how nixcell's name server for the driver's containers runs. When
// libcontainer re-executes it as a container's init, it does that and
// nothing else.
package main

import (
	"os"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins"

	"github.com/nixcell/nixcell/internal/cli"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/nomad-driver-nixcell/driver"
)

func main() {
	if runtime.IsInit() {
		runtime.Init() // never returns
	}
	if len(os.Args) > 1 {
		os.Exit(cli.Main(os.Args[1:]))
	}
	plugins.Serve(func(logger hclog.Logger) interface{} { return driver.New(logger) })
}
