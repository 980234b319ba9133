package console

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Agent is an instance's console agent: the socket it listens on and the
// lock it holds while it runs (both in the instance's run directory).
type Agent struct {
	Socket, Lock string
	// spawnedAt is when this process last started an agent (Prepare).
	spawnedAt time.Time
}

// Console is what the agent keeps of one running container.
type Console struct {
	// Master is the master side of the init's terminal.
	Master *os.File
	// Init is a pidfd of the init: when it ends, the agent writes the rest
	// of the output and the init's wait status (to ExitName, where the
	// kernel tells it: Linux 6.15 and later), and lets the console go.
	Init *os.File
	// Dir is the container's state directory (opened with O_PATH), and
	// Log the log in it named LogName; the agent renames it to LogName.1
	// when it would pass half of MaxBytes, and starts a new one.
	Dir     *os.File
	Log     *os.File
	LogName string
	// ExitName is the file in Dir where the agent writes the init's wait
	// status (a decimal number) when it ends, if the kernel tells it.
	ExitName string
	// MaxBytes is what console.log and console.log.1 keep together, at
	// least 128 KiB.
	MaxBytes uint64
}

// MinLogBytes is the smallest cap of a console log: half of it holds one
// read of the agent (64 KiB).
const MinLogBytes = 128 << 10

// requestMagic and the request's layout are agent.c's.
const requestMagic = 0x4e58434f

// Prepare starts an agent, without waiting for it, when none seems to run
// (its socket is missing from a directory that exists). A start calls it
// before it makes the container: starting an agent takes a few
// milliseconds, which pass while the container is made, and Keep then
// finds it listening instead of starting one itself.
func (a *Agent) Prepare() {
	if _, err := os.Lstat(filepath.Dir(a.Socket)); err != nil {
		return // the agent makes no directory; Keep starts it later
	}
	if _, err := os.Lstat(a.Socket); !errors.Is(err, fs.ErrNotExist) {
		return
	}
	a.spawnedAt = time.Now()
	go func() { _ = a.spawn() }() // should it fail, Keep starts one
}

// Keep hands c to the agent, starting one when none runs. The agent has
// its own copies of the descriptors; the caller still closes its own.
func (a *Agent) Keep(c Console) error {
	if c.MaxBytes < MinLogBytes {
		c.MaxBytes = MinLogBytes
	}
	deadline := time.Now().Add(10 * time.Second)
	spawned := a.spawnedAt
	wait := time.Millisecond
	for {
		retry, err := a.send(c)
		if err == nil {
			return nil
		}
		if !retry || time.Now().After(deadline) {
			return fmt.Errorf("handing the console to the console agent (%s): %w", a.Socket, err)
		}
		// An agent that is leaving holds its lock until it is gone; a new
		// one started meanwhile exits at once, so try again after a while.
		if time.Since(spawned) > 200*time.Millisecond {
			if err := a.spawn(); err != nil {
				return fmt.Errorf("starting the console agent: %w", err)
			}
			spawned = time.Now()
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// send hands c to the agent; retry tells whether a (new) agent might
// take it after an error: none listens, or the one that did was leaving.
func (a Agent) send(c Console) (retry bool, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	// The Go runtime's own signals interrupt these calls (EINTR), which
	// Go's raw system calls do not restart: an interrupted connect is
	// tried again with a new socket, a send or read again as it was.
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: a.Socket}); err != nil {
		return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EINTR), err
	}
	for _, name := range []string{c.LogName, c.ExitName} {
		if len(name) >= 64 || name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			return false, fmt.Errorf("%q cannot be the name of a file in the container's directory", name)
		}
	}
	req := make([]byte, 16+64+64)
	binary.NativeEndian.PutUint32(req[0:], requestMagic)
	binary.NativeEndian.PutUint32(req[4:], 4)
	binary.NativeEndian.PutUint64(req[8:], c.MaxBytes)
	copy(req[16:], c.LogName)
	copy(req[16+64:], c.ExitName)
	rights := unix.UnixRights(int(c.Master.Fd()), int(c.Init.Fd()), int(c.Dir.Fd()), int(c.Log.Fd()))
	if err := ignoringEINTR(func() error { return unix.Sendmsg(fd, req, rights, nil, 0) }); err != nil {
		return true, err
	}
	tv := unix.Timeval{Sec: 5}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	answer := make([]byte, 1)
	var n int
	err = ignoringEINTR(func() (err error) {
		n, err = unix.Read(fd, answer)
		return err
	})
	switch {
	case n == 1 && answer[0] == 0:
		return false, nil
	case n == 1:
		return false, errors.New("it refused it")
	case err == nil || errors.Is(err, unix.ECONNRESET):
		return true, errors.New("it closed the connection") // it was leaving
	}
	return false, err
}

// ignoringEINTR calls f again while a signal interrupts it.
func ignoringEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// spawn starts an agent for the instance, detached: it exits at once when
// another holds the lock.
func (a Agent) spawn() error {
	cmd := exec.Command("/proc/self/exe", "console-agent", a.Socket, a.Lock)
	cmd.Args[0] = "nixcell" // as ps shows it
	cmd.Env = []string{"_NIXCELL_CONSOLE_AGENT=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reaped here if this process outlives it
	return nil
}
