package runtime

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// DefaultPath is the PATH of the init and of exec'd processes: NixOS's
// system profile first, so commands resolve before and after activation.
const DefaultPath = "/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin:/usr/bin:/bin"

// ErrNotRunning means the container has no live init.
var ErrNotRunning = errors.New("container is not running")

// Status is what the runtime knows of a container right now.
type Status struct {
	// Running is true while the init lives. A container whose init died on
	// its own is not running, even though its runtime state is still there.
	Running bool `json:"running"`
	// Pid is the init's host PID, 0 when not running.
	Pid int `json:"pid,omitempty"`
	// StartedAt is when the init started, zero when not running.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// Stale is true when runtime state is left from an init that is gone;
	// Cleanup removes it.
	Stale bool `json:"-"`
}

// Inspect reports whether the container's init is alive. libcontainer
// identifies the init by PID and start time, so a recycled PID is not
// mistaken for it.
func Inspect(stateRoot, name string) (Status, error) {
	c, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return Status{}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("loading runtime state: %w", err)
	}
	st, err := c.Status()
	if err != nil {
		return Status{}, err
	}
	if st == libcontainer.Stopped {
		return Status{Stale: true}, nil
	}
	s, err := c.State()
	if err != nil {
		return Status{}, err
	}
	return Status{Running: true, Pid: s.InitProcessPid, StartedAt: bootTime().Add(ticksToDuration(s.InitProcessStartTime))}, nil
}

// Start boots the container detached: it returns once the init runs, and
// leaves no process of its own behind. On error nothing of the start
// remains.
func (c *Container) Start() (retErr error) {
	lc, _, err := c.create(nil)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = lc.Signal(unix.SIGKILL)
			_ = lc.Destroy()
			c.removeCgroupParents()
		}
	}()
	if err := lc.Exec(); err != nil {
		return fmt.Errorf("starting init: %w", err)
	}
	return nil
}

// Stdio is the standard streams of a foreground container or exec'd
// process; nil means /dev/null. Files are passed to the process as they
// are; other readers and writers through pipes.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Run boots the container in the foreground with the given streams and
// returns its init's exit status when it ends; signals arriving on stop
// (typically SIGTERM or SIGINT forwarded from a service manager) shut it
// down as Stop does. started is called once the init runs, or when the
// start failed. The runtime state is removed before Run returns.
func (c *Container) Run(stdio Stdio, stop <-chan os.Signal, timeout time.Duration, started func()) (code int, retErr error) {
	lc, proc, err := c.create(&stdio)
	if err != nil {
		started()
		return 0, err
	}
	defer func() {
		_ = lc.Signal(unix.SIGKILL)
		if err := lc.Destroy(); err != nil && retErr == nil {
			retErr = err
		}
		c.removeCgroupParents()
	}()
	err = lc.Exec()
	started()
	if err != nil {
		return 0, fmt.Errorf("starting init: %w", err)
	}
	pid, err := proc.Pid()
	if err != nil {
		return 0, err
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		ps, _ := proc.Wait()
		done <- ps
	}()
	for {
		select {
		case ps := <-done:
			return exitCode(ps), nil
		case <-stop:
			go func() { _, _ = shutdown(pid, timeout, func() { _ = lc.Signal(unix.SIGKILL) }) }()
		}
	}
}

// create makes the libcontainer container and starts its init, which then
// waits for Exec. stdio nil means detached: output goes to the console log.
func (c *Container) create(stdio *Stdio) (*libcontainer.Container, *libcontainer.Process, error) {
	if err := c.checkHost(); err != nil {
		return nil, nil, err
	}
	if err := c.prepareRoot(); err != nil {
		return nil, nil, err
	}
	cfg, err := c.config()
	if err != nil {
		return nil, nil, err
	}
	log, err := c.openConsoleLog()
	if err != nil {
		return nil, nil, err
	}
	defer log.Close()
	if err := os.MkdirAll(c.StateRoot, 0o700); err != nil {
		return nil, nil, err
	}
	lc, err := libcontainer.Create(c.StateRoot, c.Name, cfg)
	if errors.Is(err, libcontainer.ErrExist) {
		// Left by an init that died on its own; the caller checked that
		// the container does not run.
		if err := Cleanup(c.StateRoot, c.Name); err != nil {
			return nil, nil, err
		}
		lc, err = libcontainer.Create(c.StateRoot, c.Name, cfg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("creating runtime state: %w", err)
	}
	if !c.Privileged() {
		// Needed only until the container's root is set up, which Start
		// below waits for.
		if err := c.stageReadOnlyBinds(); err != nil {
			_ = lc.Destroy()
			return nil, nil, err
		}
		defer unstage(c.stagingDir())
	}
	proc := &libcontainer.Process{
		Args: []string{c.Init},
		Env:  append([]string{"PATH=" + DefaultPath, "container=nixcell", "HOME=/root", "TERM=linux"}, c.Env...),
		Cwd:  "/",
		Init: true,
	}
	if stdio != nil {
		proc.Stdin, proc.Stdout, proc.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	} else {
		proc.Stdout, proc.Stderr = log, log
	}
	if err := lc.Start(proc); err != nil {
		_ = lc.Destroy()
		c.removeCgroupParents()
		return nil, nil, fmt.Errorf("starting container: %w", err)
	}
	return lc, proc, nil
}

// Cleanup removes the runtime state and cgroups of a container whose init
// is gone, killing whatever is left. It is idempotent.
func Cleanup(stateRoot, name string) error {
	unstage(stagingDir(stateRoot, name)) // left by a killed start
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return nil
	}
	if err != nil {
		// State that cannot even be loaded is of no use to anyone.
		return os.RemoveAll(filepath.Join(stateRoot, name))
	}
	_ = lc.Signal(unix.SIGKILL)
	if err := waitGone(lc, 10*time.Second); err != nil {
		return err
	}
	cgroup := lc.Config().Cgroups.Path
	if err := lc.Destroy(); err != nil {
		return fmt.Errorf("removing runtime state: %w", err)
	}
	removeCgroupParents(cgroup)
	return nil
}

// Kill sends SIGKILL to the init, which takes every process of the PID
// namespace with it, waits until it is gone and removes the runtime state.
func Kill(stateRoot, name string) error {
	return Cleanup(stateRoot, name)
}

func waitGone(lc *libcontainer.Container, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := lc.Status()
		if err != nil || st == libcontainer.Stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("init still running %v after SIGKILL", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *Container) removeCgroupParents() { removeCgroupParents(c.CgroupPath) }

// removeCgroupParents removes the now empty parent directories that
// libcontainer created for an absolute cgroup path, in every mounted
// hierarchy; libcontainer removes only the leaf. Directories still in use
// by other containers stay (rmdir fails on them).
func removeCgroupParents(path string) {
	const mnt = "/sys/fs/cgroup"
	hierarchies, _ := os.ReadDir(mnt)
	parents := []string{}
	for p := filepath.Dir(path); p != "/" && p != "."; p = filepath.Dir(p) {
		parents = append(parents, p)
	}
	dirs := []string{mnt}
	for _, h := range hierarchies {
		if h.IsDir() {
			dirs = append(dirs, filepath.Join(mnt, h.Name()))
		}
	}
	for _, d := range dirs {
		for _, p := range parents {
			if err := unix.Rmdir(filepath.Join(d, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				break
			}
		}
	}
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 255
	}
	// os.ProcessState carries a syscall.WaitStatus; unix.WaitStatus is a
	// different type and never matches.
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// bootTime and ticksToDuration turn /proc start times (clock ticks since
// boot) into wall-clock times.
func bootTime() time.Time {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		var sec int64
		if _, err := fmt.Sscanf(line, "btime %d", &sec); err == nil {
			return time.Unix(sec, 0)
		}
	}
	return time.Time{}
}

func ticksToDuration(ticks uint64) time.Duration {
	const userHZ = 100 // sysconf(_SC_CLK_TCK) on every Linux architecture Go supports
	return time.Duration(ticks) * time.Second / userHZ
}
