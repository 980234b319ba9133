package cli

import (
	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/spec"
)

// limitFlags are --memory, --cpus and --pids of create and update.
type limitFlags struct {
	memory, cpus, pids string
}

const limitFlagsHelp = `Limits: --memory SIZE (512M, 2G), --cpus N (1.5 = 150 ms of CPU time per
100 ms) and --pids N (processes and threads) replace the configuration's
limits = { memory; cpus; pids; } and stay in force across later updates
until given again; max means no limit.`

func (l *limitFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&l.memory, "memory", "", "memory limit, e.g. 512M or 2G (max: none); replaces limits.memory")
	f.StringVar(&l.cpus, "cpus", "", "CPU limit in CPUs, e.g. 1.5 (max: none); replaces limits.cpus")
	f.StringVar(&l.pids, "pids", "", "limit on processes and threads, e.g. 2000 (max: none); replaces limits.pids")
}

// overrides returns the limits given on the command line.
func (l *limitFlags) overrides(cmd *cobra.Command) (spec.LimitOverrides, error) {
	var o spec.LimitOverrides
	f := cmd.Flags()
	if f.Changed("memory") {
		n, err := spec.ParseMemoryLimit(l.memory)
		if err != nil {
			return o, usageError{errUsage("--memory: " + err.Error())}
		}
		o.MemoryBytes = &n
	}
	if f.Changed("cpus") {
		n, err := spec.ParseCPULimit(l.cpus)
		if err != nil {
			return o, usageError{errUsage("--cpus: " + err.Error())}
		}
		o.CPUs = &n
	}
	if f.Changed("pids") {
		n, err := spec.ParsePidsLimit(l.pids)
		if err != nil {
			return o, usageError{errUsage("--pids: " + err.Error())}
		}
		o.Pids = &n
	}
	return o, nil
}
