package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/fault"

	"golang.org/x/sys/unix"
)

// NotifySocket is where the init finds the readiness socket, given to it
// as $NOTIFY_SOCKET (systemd's sd_notify protocol).
const NotifySocket = "/run/host/notify"

// ErrNotReady is the class of starts that did not become ready: no READY=1
// within the timeout, or an init that exited first.
var ErrNotReady = fault.New(fault.NotReady, "not ready")

// notifier is the host end of a container's readiness socket: a datagram
// socket bound in HostDir/host, which is /run/host inside. It lives as
// long as the command that started the container; later datagrams are
// refused, which sd_notify ignores.
type notifier struct{ fd int }

// openNotifier binds the readiness socket. Only the container's root may
// send to it: the socket is its, in a directory it cannot write to.
func (c *Container) openNotifier() (*notifier, error) {
	path := filepath.Join(c.HostDir, "host", "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the readiness socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the readiness socket %s: %w", path, err)
	}
	if err := os.Chown(path, int(c.IDs.Start), int(c.IDs.Start)); err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("readiness socket: %w", err)
	}
	return &notifier{fd: fd}, nil
}

func (n *notifier) Close() {
	if n != nil && n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}

// waitReady returns once READY=1 arrives, or with an ErrNotReady when the
// init (pidfd) exits first or timeout passes. A zero timeout waits for as
// long as the init lives.
func (n *notifier) waitReady(pidfd int, timeout time.Duration) error {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(64*4))
	for {
		ms := -1
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("%w: its init did not report READY=1 within %v", ErrNotReady, timeout)
			}
			ms = int(left/time.Millisecond) + 1
		}
		fds := []unix.PollFd{{Fd: int32(n.fd), Events: unix.POLLIN}, {Fd: int32(pidfd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, ms); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("waiting for readiness: %w", err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			for {
				nb, noob, _, _, err := unix.Recvmsg(n.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
				if errors.Is(err, unix.EAGAIN) {
					break
				}
				if err != nil {
					return fmt.Errorf("reading the readiness socket: %w", err)
				}
				closeRights(oob[:noob])
				if isReady(string(buf[:nb])) {
					return nil
				}
			}
		}
		if fds[1].Revents&unix.POLLIN != 0 {
			return fmt.Errorf("%w: its init exited before it reported READY=1", ErrNotReady)
		}
	}
}

// isReady tells whether an sd_notify datagram (newline-separated
// assignments) says READY=1.
func isReady(msg string) bool {
	for _, line := range strings.Split(msg, "\n") {
		if line == "READY=1" {
			return true
		}
	}
	return false
}

// closeRights closes file descriptors that came with a datagram (a
// notifying process may pass some, e.g. FDSTORE=1); nixcell keeps none.
func closeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

// sdNotify sends state to the service manager that runs nixcell, if any
// ($NOTIFY_SOCKET, as under a systemd unit of Type=notify; a leading '@'
// names an abstract socket). Errors are ignored, as sd_notify's callers
// do.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = unix.Sendto(fd, []byte(state), 0, &unix.SockaddrUnix{Name: path})
}
