package driver

// This file is the driver's only contact with nixcell's library (package
// cell): every other file speaks the types below, so that a change of the
// library's API is met here.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/spec"
)

// cells are the containers of the driver's nixcell state directory.
type cells struct {
	dir string
	// net shapes the instance's network when it is first made (by the
	// first task); zero: the driver's default subnets.
	net cell.NetworkConfig
}

// open returns a manager of the state directory whose progress and Nix
// build output go to log.
func (c cells) open(log io.Writer) (*cell.Manager, error) {
	if !c.net.HostOnlySubnet.IsValid() {
		c.net, _ = Config{}.network() // the defaults parse
	}
	m, err := cell.Open(cell.Config{StateDir: c.dir, Network: c.net})
	if err != nil {
		return nil, fmt.Errorf("opening the nixcell state directory %s: %w", c.dir, err)
	}
	if log != nil {
		m.Log, m.NixLog = log, log
	}
	return m, nil
}

// source is where a container's system comes from: exactly one of its
// fields is set.
type source struct {
	SystemPath string // a prebuilt NixOS system in the store
	Flake      string // REF#NAME
	ConfigFile string // a nixcell configuration file (module or attribute set)
	Expr       string // the same, inline
}

// limits are a container's resource limits; zero fields are unlimited.
type limits struct {
	MemoryBytes uint64
	CPUs        float64
	Pids        int64
}

// createRequest is a new container.
type createRequest struct {
	Name       string
	Source     source
	NixArgs    []string
	Privileged bool
	Limits     limits
}

// create builds the container's system and records it; Nix's output goes
// to log.
func (c cells) create(ctx context.Context, r createRequest, log io.Writer) error {
	m, err := c.open(log)
	if err != nil {
		return err
	}
	lo := spec.LimitOverrides{}
	if r.Limits.MemoryBytes > 0 {
		lo.MemoryBytes = &r.Limits.MemoryBytes
	}
	if r.Limits.CPUs > 0 {
		lo.CPUs = &r.Limits.CPUs
	}
	if r.Limits.Pids > 0 {
		lo.Pids = &r.Limits.Pids
	}
	return m.Create(ctx, cell.CreateRequest{
		Name: r.Name, SystemPath: r.Source.SystemPath, Flake: r.Source.Flake, ConfigFile: r.Source.ConfigFile,
		Expr: r.Source.Expr, NixArgs: r.NixArgs, Privileged: r.Privileged, Limits: lo,
	})
}

// portForward is a host port forwarded to the container.
type portForward struct {
	Protocol      string // tcp or udp
	HostAddress   string // "" for every address
	HostPort      int
	ContainerPort int
}

// bind is a host path mounted into the container.
type bind struct {
	HostPath, Path string
	ReadOnly       bool
}

// startRequest is how one run of a container differs from a plain start.
type startRequest struct {
	Stdout, Stderr *os.File
	NetNS          string // join this network namespace, else nixcell's own network
	Forwards       []portForward
	Binds          []bind
	Env            []string
}

// initProc identifies a container's init.
type initProc struct {
	Pid       int
	StartedAt time.Time
}

// start boots the container and returns its init, which may have exited
// already; the driver is its parent, so wait learns its exit status.
func (c cells) start(ctx context.Context, name string, r startRequest) (initProc, error) {
	m, err := c.open(nil)
	if err != nil {
		return initProc{}, err
	}
	opts := cell.StartOptions{Stdout: r.Stdout, Stderr: r.Stderr, NetNS: r.NetNS, Env: r.Env}
	for _, f := range r.Forwards {
		pf := cell.PortForward{Protocol: f.Protocol, HostPort: uint16(f.HostPort), ContainerPort: uint16(f.ContainerPort)}
		if f.HostAddress != "" {
			if pf.HostAddress, err = netip.ParseAddr(f.HostAddress); err != nil {
				return initProc{}, fmt.Errorf("port %d: host address %q: %w", f.HostPort, f.HostAddress, err)
			}
		}
		opts.ForwardPorts = append(opts.ForwardPorts, pf)
	}
	for _, b := range r.Binds {
		opts.Binds = append(opts.Binds, cell.Bind{HostPath: b.HostPath, Destination: b.Path, ReadOnly: b.ReadOnly})
	}
	init, err := m.StartWith(ctx, name, opts)
	return initProc{Pid: init.Pid, StartedAt: init.StartedAt}, err
}

// status is what the driver needs to know of a container.
type status struct {
	Exists  bool
	Running bool
	Pid     int
	// InitStartedAt identifies the init together with Pid.
	InitStartedAt time.Time
	IPv4          string
}

func (c cells) inspect(name string) (status, error) {
	m, err := c.open(nil)
	if err != nil {
		return status{}, err
	}
	ok, err := m.Exists(name)
	if err != nil || !ok {
		return status{}, err
	}
	info, err := m.Inspect(name)
	if err != nil {
		return status{}, err
	}
	return status{Exists: true, Running: info.Pid != 0, Pid: info.Pid, InitStartedAt: info.StartedAt, IPv4: info.IPv4}, nil
}

// stop shuts the container down cleanly (SIGRTMIN+3), killing it after
// timeout; clean tells whether it exited by itself.
func (c cells) stop(ctx context.Context, name string, timeout time.Duration) (clean bool, err error) {
	m, err := c.open(nil)
	if err != nil {
		return false, err
	}
	res, err := m.Stop(ctx, name, timeout)
	if isNotRunning(err) {
		return true, nil
	}
	return res.Clean, err
}

// terminate kills the container at once.
func (c cells) terminate(ctx context.Context, name string) error {
	m, err := c.open(nil)
	if err != nil {
		return err
	}
	if err := m.Terminate(ctx, name); err != nil && !isNotRunning(err) {
		return err
	}
	return nil
}

func (c cells) signal(name string, sig unix.Signal) error {
	m, err := c.open(nil)
	if err != nil {
		return err
	}
	return m.Signal(name, sig)
}

// destroy removes everything of the container, killing it if it runs.
func (c cells) destroy(ctx context.Context, name string) error {
	m, err := c.open(nil)
	if err != nil {
		return err
	}
	return m.Destroy(ctx, name, 0)
}

// usage is a running container's resource use, from its cgroup.
type usage struct {
	MemoryBytes, MaxMemoryBytes uint64
	CPUNanos, UserNanos         uint64
	SystemNanos, ThrottledNanos uint64
}

func (c cells) stats(name string) (usage, error) {
	m, err := c.open(nil)
	if err != nil {
		return usage{}, err
	}
	s, err := m.Stats(name)
	if err != nil {
		return usage{}, err
	}
	return usage{
		MemoryBytes: s.Memory.UsageBytes, MaxMemoryBytes: s.Memory.MaxUsageBytes,
		CPUNanos: s.CPU.UsageNanos, UserNanos: s.CPU.UserNanos, SystemNanos: s.CPU.SystemNanos,
		ThrottledNanos: s.CPU.ThrottledNanos,
	}, nil
}

// execRequest is a process to run in a container.
type execRequest struct {
	Args           []string
	Env            []string
	TTY            bool
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Done           <-chan struct{} // kills the process when closed
	Resize         <-chan termSize // with TTY
}

type termSize struct{ Rows, Cols uint16 }

func (c cells) exec(name string, r execRequest) (int, error) {
	m, err := c.open(nil)
	if err != nil {
		return 0, err
	}
	e := cell.ExecRequest{Args: r.Args, Env: r.Env, TTY: r.TTY, Done: r.Done,
		Stdio: cell.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr}}
	if r.Resize != nil {
		sizes := make(chan cell.WinSize)
		go func() {
			defer close(sizes)
			for s := range r.Resize {
				select {
				case sizes <- cell.WinSize{Rows: s.Rows, Cols: s.Cols}:
				case <-r.Done:
					return
				}
			}
		}()
		e.Resize = sizes
	}
	return m.Exec(name, e)
}

// exit is how a container's init ended.
type exit struct {
	Code   int
	Signal int
	// Known is false when the driver is not the init's parent (it was
	// started by an earlier run of the plugin), so its status is unknown.
	Known bool
}

// alive tells whether the init p still runs (a zombie does not).
func alive(p initProc) bool { return cell.Alive(cell.Init{Pid: p.Pid, StartedAt: p.StartedAt}) }

// wait waits until the init p has exited.
func wait(p initProc) (exit, error) {
	e, err := cell.WaitInit(cell.Init{Pid: p.Pid, StartedAt: p.StartedAt})
	if err != nil {
		return exit{}, err
	}
	return exit{Code: e.Code, Signal: e.Signal, Known: e.Known}, nil
}

// isNotRunning tells whether err says the container does not run.
func isNotRunning(err error) bool {
	return errors.Is(err, lifecycle.ErrNotRunning)
}
