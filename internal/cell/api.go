package cell

import (
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/nixcell/nixcell/internal/runtime"
)

// The value types of cell's API. Callers (the command line, the Nomad
// driver) speak these, never the runtime's or the network's, so those
// packages can change below cell without reaching its callers.

// Config is how an instance is opened.
type Config struct {
	// StateDir is the instance's state directory (default
	// /var/lib/nixcell).
	StateDir string
	// Network shapes the instance's network when it is first created.
	Network NetworkConfig
}

// NetworkConfig is the administrator's choice of an instance's network
// (nixcell's command line takes it from NIXCELL_* variables). Zero fields
// take the defaults; the subnets and prefixes apply when the instance's
// network state is first made, Uplink and HostsFile at every change.
type NetworkConfig struct {
	HostOnlySubnet netip.Prefix // default 10.101.0.0/16
	NATSubnet      netip.Prefix // default 10.102.0.0/16
	ULAPrefix      netip.Prefix // a /48; random by default
	NATIPv6Prefix  netip.Prefix // a routable /64 for the NAT bridge
	Uplink         string       // the NAT uplink; default: the default route's interface
	HostsFile      string       // where names are published; default /etc/hosts
}

// Stdio is the standard streams of a foreground container or of an
// exec'd process; nil means /dev/null. Files are passed to the process as
// they are; other readers and writers through pipes.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

func (s Stdio) runtime() runtime.Stdio {
	return runtime.Stdio{Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr}
}

// ExecRequest is a process to run in a running container.
type ExecRequest struct {
	Args []string
	Env  []string // added to the default environment
	Cwd  string   // default "/root" for a terminal, "/" otherwise
	// TTY gives the process a new terminal in the container, connected to
	// Stdio (put in raw mode and resized with it when it is a terminal).
	TTY   bool
	Stdio Stdio
	// Done, when it closes, kills the process (a caller's timeout).
	Done <-chan struct{}
	// Resize, for a terminal, gives its size when Stdio is not itself a
	// terminal (Nomad's alloc exec): the first value sets it, later ones
	// resize it.
	Resize <-chan WinSize
}

// WinSize is a terminal's size in characters.
type WinSize struct{ Rows, Cols uint16 }

// StopResult says how a stop went.
type StopResult struct {
	// Clean is true when the init exited after the stop signal; false when
	// it was killed at the timeout.
	Clean bool
	// Signalled is false when the init never installed a handler for the
	// stop signal, so it was never sent.
	Signalled bool
}

// Init identifies a container's init process.
type Init struct {
	Pid       int
	StartedAt time.Time
}

// Exit is how an init ended.
type Exit struct {
	// Code is its exit status as run returns it: the init's own, 0 for a
	// halt or power off, 133 for a reboot, 128+N when signal N killed it.
	Code int `json:"code"`
	// Signal is the signal that killed it (0 when it exited, halted or
	// rebooted).
	Signal int `json:"signal,omitempty"`
	// Known is false when how it ended is not known, only that it did
	// (WaitInit from a process that did not start it; the last exit of a
	// detached container before Linux 6.15): Code and Signal are 0 then.
	Known bool `json:"statusKnown"`
	// OOMKilled: the kernel's OOM killer ended it (at limits.memory).
	OOMKilled bool `json:"oomKilled"`
}

func exitOf(e runtime.LastExit) Exit {
	return Exit{Code: e.Code, Signal: int(e.Signal), Known: e.Known, OOMKilled: e.OOMKilled}
}

// Stats is what the stats command reports of a running container: its
// resource use as the kernel accounts it in the container's cgroup.
type Stats struct {
	Name   string      `json:"name"`
	Memory MemoryStats `json:"memory"`
	CPU    CPUStats    `json:"cpu"`
	Pids   PidsStats   `json:"pids"`
}

// MemoryStats is the container's memory use.
type MemoryStats struct {
	// UsageBytes is what the kernel charges the container now, page cache
	// and tmpfs files included.
	UsageBytes uint64 `json:"usageBytes"`
	// MaxUsageBytes is the peak usage (cgroup v1, and v2 from Linux 5.19).
	MaxUsageBytes uint64 `json:"maxUsageBytes,omitempty"`
	LimitBytes    uint64 `json:"limitBytes"` // 0: no limit
	// OOMKills counts the processes the kernel's OOM killer ended in it.
	OOMKills uint64 `json:"oomKills"`
}

// CPUStats is the container's CPU use.
type CPUStats struct {
	UsageNanos     uint64  `json:"usageNanos"`
	UserNanos      uint64  `json:"userNanos"`
	SystemNanos    uint64  `json:"systemNanos"`
	Limit          float64 `json:"limit"` // CPUs; 0: no limit
	ThrottledNanos uint64  `json:"throttledNanos"`
}

// PidsStats is the container's number of processes and threads.
type PidsStats struct {
	Current uint64 `json:"current"`
	Limit   uint64 `json:"limit"` // 0: no limit
}

func statsOf(name string, s runtime.Stats) Stats {
	return Stats{
		Name: name,
		Memory: MemoryStats{UsageBytes: s.Memory.UsageBytes, MaxUsageBytes: s.Memory.MaxUsageBytes,
			LimitBytes: s.Memory.LimitBytes, OOMKills: s.Memory.OOMKills},
		CPU: CPUStats{UsageNanos: s.CPU.UsageNanos, UserNanos: s.CPU.UserNanos, SystemNanos: s.CPU.SystemNanos,
			Limit: s.CPU.Limit, ThrottledNanos: s.CPU.ThrottledNanos},
		Pids: PidsStats{Current: s.Pids.Current, Limit: s.Pids.Limit},
	}
}

// StartOptions are what a program that runs containers on behalf of
// another scheduler (the Nomad driver) decides about one start, beyond the
// container's own settings. Nothing of them is recorded but in the run
// table: they hold for this run of the init only.
type StartOptions struct {
	// Stdout and Stderr receive the init's output instead of the console
	// log; they are handed to the init, so they outlive the caller.
	Stdout, Stderr *os.File
	// NetNS is the path of a network namespace that someone else made and
	// configured (a Nomad allocation's): the container joins it and gets
	// none of nixcell's networking.
	NetNS string
	// ForwardPorts are forwarded besides the container's own
	// network.forwardPorts (the ports Nomad allocated).
	ForwardPorts []PortForward
	// Binds are mounted besides the container's own bind mounts.
	Binds []Bind
	// Env is added to the init's environment.
	Env []string
}

// PortForward is one forwarded host port.
type PortForward struct {
	Protocol      string // "tcp" or "udp"
	HostPort      uint16
	ContainerPort uint16
	HostAddress   netip.Addr // zero: every host address
}

// Bind is a host path mounted into the container for one run, as a
// bindMounts entry.
type Bind struct {
	HostPath, Destination string
	ReadOnly              bool
}
