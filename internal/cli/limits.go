package cli

import (
	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/spec"
)

// limitFlags are --memory, --cpus, --pids and --disk of create and update.
type limitFlags struct {
	memory, cpus, pids, disk string
}

const limitFlagsHelp = `Limits: --memory SIZE (512M, 2G), --cpus N (1.5 = 150 ms of CPU time per
100 ms), --pids N (processes and threads) and --disk SIZE (what the root may
take on the state file system: a project quota on ext4 or XFS, a qgroup on
btrfs) replace the configuration's limits = { memory; cpus; pids; disk; }
and stay in force across later updates until given again; max means no
limit.`

func (l *limitFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&l.memory, "memory", "", "memory limit, e.g. 512M or 2G (max: none); replaces limits.memory")
	f.StringVar(&l.cpus, "cpus", "", "CPU limit in CPUs, e.g. 1.5 (max: none); replaces limits.cpus")
	f.StringVar(&l.pids, "pids", "", "limit on processes and threads, e.g. 2000 (max: none); replaces limits.pids")
	f.StringVar(&l.disk, "disk", "", "limit on the space of the root, e.g. 10G (max: none); replaces limits.disk")
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
	if f.Changed("disk") {
		n, err := spec.ParseDiskLimit(l.disk)
		if err != nil {
			return o, usageError{errUsage("--disk: " + err.Error())}
		}
		o.DiskBytes = &n
	}
	return o, nil
}
