package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// StopSignal is SIGRTMIN+3 in glibc's numbering, the signal on which
// systemd halts, as systemd-nspawn and nixos-container send it.
const StopSignal = unix.Signal(37)

// StopResult says how a stop ended.
type StopResult struct {
	// Clean is true when the init exited after the stop signal; false when
	// it had to be killed at the timeout.
	Clean bool
	// Signalled is false when the init never installed a handler for the
	// stop signal, so it was never sent.
	Signalled bool
}

// Stop shuts the container down: the stop signal to its init, then SIGKILL
// when it is still running at the timeout; then its runtime state is
// removed.
func Stop(stateRoot, name string, timeout time.Duration) (StopResult, error) {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return StopResult{}, lifecycle.ErrNotRunning
	}
	if err != nil {
		return StopResult{}, fmt.Errorf("loading runtime state: %w", err)
	}
	state, err := lc.State()
	if err != nil {
		return StopResult{}, err
	}
	res, err := shutdown(state.InitProcessPid, timeout, func() { _ = lc.Signal(unix.SIGKILL) })
	if err != nil {
		return res, err
	}
	recordExit(lc, exitRecord{Stopped: true}, true)
	return res, Cleanup(Place{StateRoot: stateRoot, Name: name})
}

// shutdown delivers the stop signal to pid and waits for it to exit, calling
// kill at the timeout. PID 1 of a PID namespace ignores signals it has no
// handler for, so a signal sent while the init is still starting would be
// lost: the signal is sent only once the init has a handler for it or
// blocks it (its SigCgt and SigBlk masks in /proc), checked until the
// timeout.
func shutdown(pid int, timeout time.Duration, kill func()) (StopResult, error) {
	var res StopResult
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return StopResult{Clean: true}, nil
	}
	if err != nil {
		return res, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)

	// A signal sent while the init only blocks it is queued; when the init
	// then unblocks it before it has a handler (a shell blocks every signal
	// around a fork), the kernel drops it. So a signal sent to an init that
	// only blocked it is sent once more if the init later has a handler and
	// the first is no longer pending. An init that reads its signals from a
	// signalfd (systemd) never gets a handler, and never a second signal.
	send := func() error {
		err := unix.PidfdSendSignal(pidfd, StopSignal, nil, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sending the stop signal: %w", err)
		}
		return nil
	}
	deadline := time.Now().Add(timeout)
	onlyBlocked, resent := false, false
	for {
		m := readSignalMasks(pid)
		switch {
		case m.beforeExec:
			// Still libcontainer's init, a Go program that catches every
			// signal: one sent now is lost with its execve.
		case !res.Signalled && (m.handles(StopSignal) || m.blocks(StopSignal)):
			if err := send(); err != nil {
				return res, err
			}
			res.Signalled, onlyBlocked = true, !m.handles(StopSignal)
		case onlyBlocked && !resent && m.handles(StopSignal) && !m.pending(StopSignal):
			if err := send(); err != nil {
				return res, err
			}
			resent = true
		}
		wait := time.Until(deadline)
		if (!res.Signalled || onlyBlocked && !resent || m.beforeExec) && wait > 10*time.Millisecond {
			wait = 10 * time.Millisecond // poll for the handler
		}
		if exited(pidfd, wait) {
			res.Clean = res.Signalled
			return res, nil
		}
		if time.Now().After(deadline) {
			kill()
			exited(pidfd, 10*time.Second)
			return res, nil
		}
	}
}

// exited waits up to d for the process behind pidfd to end.
func exited(pidfd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	ms := int(d / time.Millisecond)
	if ms < 0 {
		ms = 0
	}
	for {
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n > 0
	}
}

// signalMasks are a process's signal masks from /proc/PID/status.
type signalMasks struct {
	blocked, caught, pendingMask uint64
	// beforeExec: the process is still libcontainer's init stage (start
	// can return before it has executed the container's init), whose masks
	// say nothing of the init's.
	beforeExec bool
}

// libcontainerInitName is the name libcontainer's init stage gives itself
// (nsexec.c) until it executes the container's init.
const libcontainerInitName = "runc:[2:INIT]"

func bit(sig unix.Signal) uint64 { return uint64(1) << (uint(sig) - 1) }

// handles: a handler is installed for sig.
func (m signalMasks) handles(sig unix.Signal) bool { return m.caught&bit(sig) != 0 }

// blocks: sig is blocked, so it is queued until unblocked (systemd blocks
// the signals it reads from a signalfd).
func (m signalMasks) blocks(sig unix.Signal) bool { return m.blocked&bit(sig) != 0 }

// pending: sig is queued and not yet delivered.
func (m signalMasks) pending(sig unix.Signal) bool { return m.pendingMask&bit(sig) != 0 }

// readSignalMasks reads pid's masks; a process that is gone has none.
func readSignalMasks(pid int) signalMasks {
	var m signalMasks
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		if k == "Name" {
			m.beforeExec = strings.TrimSpace(v) == libcontainerInitName
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			continue
		}
		switch k {
		case "SigBlk":
			m.blocked = mask
		case "SigCgt":
			m.caught = mask
		case "SigPnd", "ShdPnd":
			m.pendingMask |= mask
		}
	}
	return m
}
