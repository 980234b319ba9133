package cell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/kernel"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/systemd"
	"github.com/nixcell/nixcell/internal/trace"
	"github.com/nixcell/nixcell/internal/undo"
)

// Start boots the container detached and returns once its init runs.
func (m *Manager) Start(ctx context.Context, name string) error {
	return m.StartWait(ctx, name, 0)
}

// StartWait boots the container detached and, when wait is positive,
// returns only once it is ready, for at most wait: when its init reported
// READY=1 (systemd does), or when the init runs if it is not one that
// reports. A container not ready in time keeps running; the error says so.
func (m *Manager) StartWait(ctx context.Context, name string, wait time.Duration) error {
	// The cgroup lock's warm-up (see startLocked) is begun before the
	// container's lock is taken: the sooner it has paid its wait, the
	// likelier the init's move finds it paid.
	warm := runtime.WarmCgroupMoves(trace.From(ctx))
	defer warm()
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Start)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = m.startLocked(ctx, rec, startRequest{wait: wait, warm: warm})
	return err
}

// StartWith boots the container detached, as Start does, with opts, and
// returns its init, which may have exited already. The caller stays the
// init's parent while it lives, so WaitInit gives it the init's exit
// status.
func (m *Manager) StartWith(ctx context.Context, name string, opts StartOptions) (Init, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Start)
	if err != nil {
		return Init{}, err
	}
	defer unlock()
	return m.startLocked(ctx, rec, startRequest{opts: opts})
}

// startRequest is how one start differs from a plain detached one.
type startRequest struct {
	// wait, when positive, waits that long for readiness (StartWait).
	wait time.Duration
	opts StartOptions
	// restore brings the init back from a CRIU checkpoint instead of
	// starting it (RestoreCheckpoint).
	restore *runtime.RestoreFrom
	// warm, when set, stops a warm-up of the cgroup lock the caller began
	// (WarmCgroupMoves); else the start begins its own.
	warm func()
	// foreground runs the init with stdio and returns when it ends (Run):
	// stop delivers the signals that shut it down, and timeout is how long
	// that shutdown waits before it kills.
	foreground *foreground
}

type foreground struct {
	stdio   Stdio
	stop    <-chan os.Signal
	timeout time.Duration
	// started is called once the init runs, or when the start failed.
	started func()
	// exit is how the init ended, when it has.
	exit Exit
}

// startLocked boots rec. Its steps, each undone when a later one fails:
// the leftovers of an earlier init are removed; the runtime creates the
// container while, beside it, the run table records the start (phase
// starting, owned by this process) and the host's network is brought to
// what the container needs; the container's interfaces are configured
// once both are done, before its init runs; the run table records the
// running init. A container that is not ready in time
// keeps running (the error says so). Preconditions: the container's lock
// is held and it is not running.
func (m *Manager) startLocked(ctx context.Context, rec *state.Container, req startRequest) (_ Init, retErr error) {
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	tr := trace.From(ctx)
	tr.Mark("record and lock")
	// From here the init's move into its cgroups is prepared in parallel
	// (see WarmCgroupMoves); it ends once the init runs. Run starts it
	// only once it has moved itself into its unit's supervisor cgroup,
	// where it stays (it moves this process into the cgroup it is in).
	warm := func() {}
	switch {
	case req.warm != nil:
		warm = req.warm
	case req.foreground == nil:
		warm = runtime.WarmCgroupMoves(tr)
	}
	defer func() { warm() }()
	c, err := m.runtimeContainer(rec)
	if err != nil {
		return Init{}, err
	}
	c.Trace = tr
	tr.Mark("profile and ID range")
	if err := runtime.Cleanup(c.Place()); err != nil {
		return Init{}, err
	}
	tr.Mark("leftovers checked")
	if err := failpoint.Hit("start/cleaned"); err != nil {
		return Init{}, err
	}
	run, err := m.runFor(rec, req.opts)
	if err != nil {
		return Init{}, err
	}
	// The host's side of the network comes up beside the container's
	// creation; the init's interfaces are configured once both are done
	// (BeforeInit), and whatever happens to the start, it is waited for
	// before the start returns, so that its undo finds it.
	releaseClaim, err := m.claimCgroupParent(ctx)
	if err != nil {
		return Init{}, err
	}
	net := m.netStartBeside(ctx, rec.Name, run)
	joined := false
	joinNet := func() {
		if joined {
			return
		}
		joined = true
		applied := net.wait()
		releaseClaim()
		if applied {
			u.Push("taking down its network", func(ctx context.Context) error { return m.netStop(ctx, rec.Name, true) })
		} else {
			u.Push("removing the cgroup parent if unused", m.tidyCgroupParent)
		}
	}
	defer joinNet()
	c.HostNetwork, c.NetNS = run.NetNS == "" && run.Network.HostNetwork, req.opts.NetNS
	c.BeforeInit = func(pid int) error {
		if net.wait(); net.err != nil {
			return net.err
		}
		if c.NetNS != "" {
			return nil
		}
		return network.Attach(pid, net.plan)
	}
	c.Stdout, c.Stderr = req.opts.Stdout, req.opts.Stderr
	for _, b := range req.opts.Binds {
		c.Binds = append(c.Binds, runtime.Bind{Source: b.HostPath, Destination: b.Destination, ReadOnly: b.ReadOnly})
	}
	c.Env = append(c.Env, req.opts.Env...)

	if f := req.foreground; f != nil {
		// Run as its unit (nixcell@NAME.service): the container goes into
		// the unit's delegated cgroup, not a scope of its own.
		if unit, ok := systemd.OwnUnit(rec.Name); ok && kernel.Cgroups() == kernel.CgroupV2 {
			payload, err := systemd.Supervise(unit)
			if err != nil {
				return Init{}, err
			}
			c.CgroupPath, c.SystemdSlice = payload, ""
		}
		warm = runtime.WarmCgroupMoves(tr)
		var recordErr error
		exit, err := c.Run(f.stdio.runtime(), f.stop, f.timeout, func() {
			warm()
			joinNet() // the run table holds the start now: its claim on the cgroup parent ends
			recordErr = m.recordInit(ctx, rec.Name)
			m.registerMachine(rec)
			f.started()
		})
		f.exit = exitOf(exit)
		if err == nil {
			err = recordErr
		}
		joinNet()
		// The init has ended, or never ran: its network goes, as the undo
		// would take it.
		u.Release()
		if serr := m.netStop(ctx, rec.Name, true); serr != nil && err == nil {
			err = serr
		}
		return Init{}, err
	}

	c.ReadyTimeout = req.wait
	if req.restore != nil {
		err = c.Restore(*req.restore)
	} else {
		err = c.Start()
	}
	joinNet()
	warm()
	var notReady *runtime.NotReadyError
	if err != nil && !errors.As(err, &notReady) {
		return Init{}, err
	}
	u.Push("killing the init", func(ctx context.Context) error { return runtime.Kill(c.Place()) })
	if ferr := failpoint.Hit("start/init-running"); ferr != nil {
		return Init{}, ferr
	}
	if rerr := m.recordInit(ctx, rec.Name); rerr != nil {
		return Init{}, rerr
	}
	tr.Mark("run recorded")
	m.registerMachine(rec)
	u.Release() // it runs, ready or not
	var init Init
	if pid, started, ierr := runtime.InitOf(m.Store.RuntimeRoot(), rec.Name); ierr == nil {
		init = Init{Pid: pid, StartedAt: started}
	}
	if notReady != nil {
		return init, fmt.Errorf("%w (stop it with nixcell stop %s)", err, rec.Name)
	}
	return init, nil
}

// runFor is the run table's record of a start of rec with opts: what it
// boots and the network it starts with.
func (m *Manager) runFor(rec *state.Container, opts StartOptions) (state.Run, error) {
	run := state.Run{Phase: state.Starting, Owner: self(), Network: rec.Spec.Network, NetNS: opts.NetNS}
	if opts.NetNS != "" {
		run.Network = spec.Network{}
	}
	for _, f := range opts.ForwardPorts {
		run.Network.ForwardPorts = append(slices.Clone(run.Network.ForwardPorts),
			spec.PortForward{Protocol: f.Protocol, HostPort: f.HostPort, ContainerPort: f.ContainerPort, HostAddress: f.HostAddress})
	}
	if len(opts.ForwardPorts) > 0 {
		s := rec.Spec
		s.Network = run.Network
		if err := s.Validate(); err != nil {
			return run, err
		}
	}
	if rec.Source.RootFS == "" {
		gen, system, err := nix.Profile{Name: rec.Name}.Current()
		if err != nil {
			return run, err
		}
		run.Generation, run.System = gen, system
	}
	return run, nil
}

// recordInit records that the container's init runs, the end of a start.
func (m *Manager) recordInit(ctx context.Context, name string) error {
	pid, started, err := runtime.InitOf(m.Store.RuntimeRoot(), name)
	if err != nil {
		return err
	}
	return m.changeRuns(ctx, func(runs state.Runs) error {
		r, ok := runs[name]
		if !ok {
			return fmt.Errorf("the run table lost the start of %s", name)
		}
		r.Phase, r.Owner, r.Init = state.Running, state.Process{}, state.Process{Pid: pid, StartedAt: started}
		runs[name] = r
		return nil
	})
}

// self identifies this process in the run table.
func self() state.Process {
	pid := os.Getpid()
	return state.Process{Pid: pid, StartedAt: runtime.StartTime(pid)}
}

// Run boots the container in the foreground and returns how its init
// ended. Its console is Stdio: its output goes to Stdout, and when Stdin
// is a terminal, keys go to it (see runtime.EscapeKey). A signal on stop
// shuts it down as stop would. The lock is held only while it starts, so
// stop and exec work on it from elsewhere.
func (m *Manager) Run(ctx context.Context, name string, stdio Stdio, stop <-chan os.Signal, timeout time.Duration) (Exit, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Start)
	if err != nil {
		return Exit{}, err
	}
	// The lock goes once the init runs, so stop and exec work meanwhile.
	var once sync.Once
	release := func() { once.Do(unlock) }
	defer release()
	f := &foreground{stdio: stdio, stop: stop, timeout: timeout, started: release}
	_, err = m.startLocked(ctx, rec, startRequest{foreground: f})
	return f.exit, err
}

// Stop shuts the container down cleanly, killing it after timeout.
func (m *Manager) Stop(ctx context.Context, name string, timeout time.Duration) (StopResult, error) {
	_, _, unlock, err := m.locked(ctx, name, lifecycle.Stop)
	if err != nil {
		return StopResult{}, err
	}
	defer unlock()
	res, err := runtime.Stop(m.Store.RuntimeRoot(), name, timeout)
	if err != nil {
		return StopResult{}, err
	}
	return StopResult{Clean: res.Clean, Signalled: res.Signalled}, m.netStop(ctx, name, false)
}

// Terminate kills the container at once.
func (m *Manager) Terminate(ctx context.Context, name string) error {
	_, _, unlock, err := m.locked(ctx, name, lifecycle.Terminate)
	if err != nil {
		return err
	}
	defer unlock()
	if err := runtime.Kill(m.place(name)); err != nil {
		return err
	}
	return m.netStop(ctx, name, false)
}

// Restart stops the container if it runs, then starts it.
func (m *Manager) Restart(ctx context.Context, name string, timeout time.Duration) error {
	rec, st, unlock, err := m.locked(ctx, name, lifecycle.Restart)
	if err != nil {
		return err
	}
	defer unlock()
	return m.restartLocked(ctx, rec, st, timeout)
}

// restartLocked stops rec if it runs, then starts it. Preconditions: the
// container's lock is held.
func (m *Manager) restartLocked(ctx context.Context, rec *state.Container, st lifecycle.State, timeout time.Duration) error {
	if st == lifecycle.Running {
		if _, err := runtime.Stop(m.Store.RuntimeRoot(), rec.Name, timeout); err != nil {
			return err
		}
		if err := m.netStop(ctx, rec.Name, false); err != nil {
			return err
		}
	}
	_, err := m.startLocked(ctx, rec, startRequest{})
	return err
}

// Exec runs a process in the running container and returns its exit
// status. It takes no lock: a long exec must not block stop.
func (m *Manager) Exec(name string, e ExecRequest) (int, error) {
	op := lifecycle.Exec
	if e.TTY {
		op = lifecycle.Login
	}
	if err := m.createdAllows(name, op); err != nil {
		return 0, err
	}
	re := runtime.Exec{Args: e.Args, Env: e.Env, Cwd: e.Cwd, TTY: e.TTY, Stdio: e.Stdio.runtime(), Done: e.Done}
	if e.Resize != nil {
		sizes := make(chan runtime.WinSize)
		go func() {
			defer close(sizes)
			for s := range e.Resize {
				sizes <- runtime.WinSize{Rows: s.Rows, Cols: s.Cols}
			}
		}()
		re.Resize = sizes
	}
	// The runtime finds out whether it runs: asking it first would load
	// its state twice on every exec.
	code, err := re.Run(m.Store.RuntimeRoot(), name)
	if errors.Is(err, lifecycle.ErrNotRunning) {
		return 0, lifecycle.Check(lifecycle.Stopped, op)
	}
	return code, err
}

// createdAllows checks, without the lock, that the container exists and
// that its creation finished, for an operation on its running init.
func (m *Manager) createdAllows(name string, op lifecycle.Op) error {
	if err := spec.ValidateName(name); err != nil {
		return err
	}
	rec, err := m.Store.Load(name)
	if err != nil {
		return err
	}
	if rec.Phase != state.Created {
		st, _, _ := m.stateOf(rec)
		return lifecycle.Check(st, op)
	}
	return nil
}

// Signal sends sig to the running container's init. It takes no lock, as
// exec.
func (m *Manager) Signal(name string, sig unix.Signal) error {
	if err := m.createdAllows(name, lifecycle.Signal); err != nil {
		return err
	}
	err := runtime.Signal(m.Store.RuntimeRoot(), name, sig)
	if errors.Is(err, lifecycle.ErrNotRunning) {
		return lifecycle.Check(lifecycle.Stopped, lifecycle.Signal)
	}
	return err
}

// WaitInit waits until init has exited. When this process started it
// (StartWith, from a long-lived program that stays its parent), it learns
// how it ended; otherwise Exit.Known is false.
func WaitInit(init Init) (Exit, error) {
	e, err := runtime.WaitInit(init.Pid, init.StartedAt)
	if errors.Is(err, runtime.ErrNotChild) {
		return Exit{}, nil
	}
	if err != nil {
		return Exit{}, err
	}
	return Exit{Code: e.Code, Signal: int(e.Signal), Known: true}, nil
}

// Alive tells whether init still runs (a zombie does not).
func Alive(init Init) bool { return runtime.Alive(init.Pid, init.StartedAt) }

// registerMachine registers the running container with systemd-machined,
// where the host has it, so machinectl lists it; a host without machined
// is silently skipped, a refusal only warned of.
func (m *Manager) registerMachine(rec *state.Container) {
	if !systemd.Host() {
		return
	}
	pid, _, err := runtime.InitOf(m.Store.RuntimeRoot(), rec.Name)
	if err != nil {
		return
	}
	root := m.Store.RootFS(rec.Name)
	if rec.Source.RootFS != "" {
		root = rec.Source.RootFS
	}
	if _, err := systemd.RegisterMachine(systemd.Machine{Name: rec.Name, UUID: uuidOf(rec), Leader: pid, Root: root, Service: "nixcell"}); err != nil {
		m.warnf("%s: %v", rec.Name, err)
	}
}
