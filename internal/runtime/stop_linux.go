package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

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
		return StopResult{}, ErrNotRunning
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
	return res, Cleanup(stateRoot, name)
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

	deadline := time.Now().Add(timeout)
	for {
		if !res.Signalled && catches(pid, StopSignal) {
			if err := unix.PidfdSendSignal(pidfd, StopSignal, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return res, fmt.Errorf("sending the stop signal: %w", err)
			}
			res.Signalled = true
		}
		wait := time.Until(deadline)
		if !res.Signalled && wait > 10*time.Millisecond {
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

// catches tells whether pid will act on sig: it has a handler installed
// for it, or it blocks it (systemd blocks the signals it handles and reads
// them from a signalfd; a blocked signal is queued, never dropped).
func catches(pid int, sig unix.Signal) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	defer f.Close()
	bit := uint64(1) << (uint(sig) - 1)
	found := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		for _, field := range []string{"SigBlk:", "SigCgt:"} {
			if v, ok := strings.CutPrefix(s.Text(), field); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				found = found || err == nil && mask&bit != 0
			}
		}
	}
	return found
}
