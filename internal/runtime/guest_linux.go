package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Guest reads a running container's own files as its processes see them:
// through its init's root (/proc/PID/root), so its mounts (an ephemeral
// root, bind mounts) count, with every path resolved inside that root.
// Those files are the container's: a link there resolves within it
// (RESOLVE_IN_ROOT), never on the host, and only regular files are read,
// up to a size.
type Guest struct {
	root *os.File
	pid  int
}

// OpenGuest opens the running container's root.
func OpenGuest(stateRoot, name string) (*Guest, error) {
	lc, err := loadRunning(stateRoot, name)
	if err != nil {
		return nil, err
	}
	s, err := lc.State()
	if err != nil {
		return nil, err
	}
	pid := s.InitProcessPid
	root, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the container's root: %w", err)
	}
	// Checked once the root is open: a PID recycled meanwhile is not taken
	// for the init.
	if !Alive(pid, bootTime().Add(ticksToDuration(s.InitProcessStartTime))) {
		root.Close()
		return nil, fmt.Errorf("opening the container's root: its init %d is gone", pid)
	}
	return &Guest{root: root, pid: pid}, nil
}

// Close releases the container's root.
func (g *Guest) Close() error { return g.root.Close() }

// open opens p, an absolute path inside the container.
func (g *Guest) open(p string, flags uint64) (*os.File, error) {
	fd, err := unix.Openat2(int(g.root.Fd()), strings.TrimPrefix(path.Clean(p), "/"), &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// ReadFile reads the regular file p inside the container, at most max
// bytes of it.
func (g *Guest) ReadFile(p string, max int64) ([]byte, error) {
	// O_NONBLOCK: a FIFO planted there must not hang the host's reader.
	f, err := g.open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in the container is not a regular file", p)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// Executable tells whether p inside the container is an executable
// regular file.
func (g *Guest) Executable(p string) bool {
	f, err := g.open(p, unix.O_PATH)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// LookPath finds an executable named file in the directories of
// DefaultPath inside the container, as exec's PATH finds it; "" when none
// has it.
func (g *Guest) LookPath(file string) string {
	for _, dir := range strings.Split(DefaultPath, ":") {
		if p := path.Join(dir, file); g.Executable(p) {
			return p
		}
	}
	return ""
}

// InitName is the init's command name (what /proc/1/comm says inside):
// "systemd" for systemd, also when a script exec'd it (NixOS's stage 2).
func (g *Guest) InitName() (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(g.pid) + "/comm")
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("its init %d is gone", g.pid)
	}
	return strings.TrimSpace(string(data)), err
}
