package runtime

import (
	"errors"
	"fmt"
	"time"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// Signal sends sig to the running container's init.
func Signal(stateRoot, name string, sig unix.Signal) error {
	lc, err := loadRunning(stateRoot, name)
	if err != nil {
		return err
	}
	if err := lc.Signal(sig); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return lifecycle.ErrNotRunning
		}
		return fmt.Errorf("sending %v to the init: %w", unix.SignalName(sig), err)
	}
	return nil
}

// Exit is how an init ended.
type Exit struct {
	// Code is its exit status as Run returns it: the init's own, 0 for a
	// halt or power off, RebootStatus for a reboot, 128+N when signal N
	// killed it.
	Code int
	// Signal is the signal that killed it (0 when it exited, halted or
	// rebooted).
	Signal unix.Signal
}

// ErrNotChild means that the init's exit status cannot be known here: only
// its parent learns it, and that is the process that started it detached
// while it lives (when it exits, the init is reparented to the host's
// init).
var ErrNotChild = errors.New("the init is not this process's child, so its exit status is unknown")

// WaitInit waits until the init pid, which started at startedAt (Status
// reports both), has exited. When this process started it (a long-lived
// program such as the Nomad driver, which stays its parent), it reaps it
// and returns its exit; otherwise it still waits, then returns
// ErrNotChild.
func WaitInit(pid int, startedAt time.Time) (Exit, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil {
			return exitOf(ws), nil
		}
		if !errors.Is(err, unix.ECHILD) {
			return Exit{}, fmt.Errorf("waiting for init %d: %w", pid, err)
		}
		break
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return Exit{}, ErrNotChild
	}
	if err != nil {
		return Exit{}, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	// Checked after the pidfd is open: a PID recycled since is not waited for.
	if !Alive(pid, startedAt) {
		return Exit{}, ErrNotChild
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Exit{}, fmt.Errorf("waiting for init %d: %w", pid, err)
		}
		return Exit{}, ErrNotChild
	}
}

// exitOf is how an init ended, from its wait status. reboot(2) in a PID
// namespace ends its init as if killed by SIGINT for a halt or power off,
// by SIGHUP for a reboot: those are a clean 0 and RebootStatus.
func exitOf(ws unix.WaitStatus) Exit {
	switch {
	case ws.Exited():
		return Exit{Code: ws.ExitStatus()}
	case ws.Signaled() && ws.Signal() == unix.SIGINT:
		return Exit{} // halt or power off: reboot(2) in a PID namespace
	case ws.Signaled() && ws.Signal() == unix.SIGHUP:
		return Exit{Code: RebootStatus}
	case ws.Signaled():
		return Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
	}
	return Exit{Code: 255}
}

// InitOf returns the pid and start time of the container's init as its
// runtime state records them, whether or not it still runs: the caller of a
// detached start asks for its child, which may have exited already.
func InitOf(stateRoot, name string) (pid int, startedAt time.Time, err error) {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return 0, time.Time{}, lifecycle.ErrNotRunning
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("loading runtime state: %w", err)
	}
	s, err := lc.State()
	if err != nil {
		return 0, time.Time{}, err
	}
	return s.InitProcessPid, bootTime().Add(ticksToDuration(s.InitProcessStartTime)), nil
}
