// Package hostfs owns the host's file operations on paths that a container
// may control: a path is resolved without following symbolic links
// (openat2 with RESOLVE_NO_SYMLINKS, and RESOLVE_BENEATH below a directory
// handle), and what is created is made through the handle of its parent,
// so a link or a rename a container made can never turn an operation of
// the host's root onto another file. It also tells whether host users can
// reach a path, for trees where a container writes as the host's root.
//
// CONTRIBUTING.md lists every host-side operation on a tree a container can
// write and how each is protected.
package hostfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
	"golang.org/x/sys/unix"
)

// SymlinkError is a path that has a symbolic link where none may be, or
// that leads outside the directory it must stay in.
type SymlinkError struct {
	Path string
}

// Is makes a refused link a fault.Invalid path.
func (e *SymlinkError) Is(target error) bool { return target == fault.Invalid }

func (e *SymlinkError) Error() string {
	return fmt.Sprintf("%s has a symbolic link in it", e.Path)
}

const noLinks = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openat2(dirfd int, name, path string, flags int, mode uint32, resolve uint64) (*os.File, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve}
	for {
		fd, err := unix.Openat2(dirfd, name, how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue // a rename raced the lookup: try again
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return nil, &SymlinkError{Path: path}
		default:
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// Open opens the absolute host path with flags (O_PATH, O_RDONLY, ...)
// without following a symbolic link in any of its components.
func Open(path string, flags int) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is not an absolute path", path)
	}
	return openat2(unix.AT_FDCWD, path, path, flags, 0, noLinks)
}

// OpenIn opens rel below the directory dir without following a symbolic
// link and without leaving dir ("..", absolute paths and links are
// refused).
func OpenIn(dir *os.File, rel string, flags int, mode uint32) (*os.File, error) {
	return openat2(int(dir.Fd()), rel, filepath.Join(dir.Name(), rel), flags, mode, noLinks|unix.RESOLVE_BENEATH)
}

// MkdirAll makes the directory path and whichever of its parents are
// missing, without following symbolic links: path gets mode and the owner
// uid:gid, the parents it makes mode 0755 and the host's root as owner;
// existing directories are left as they are. A component that exists but
// is not a directory is an error.
func MkdirAll(path string, mode os.FileMode, uid, gid int) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path", path)
	}
	dir, err := os.Open("/")
	if err != nil {
		return err
	}
	parts := strings.Split(strings.Trim(filepath.Clean(path), "/"), "/")
	for i, part := range parts {
		if part == "" {
			continue
		}
		next, err := OpenIn(dir, part, unix.O_PATH|unix.O_DIRECTORY, 0)
		if errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%s exists and is not a directory", filepath.Join(dir.Name(), part))
		}
		if errors.Is(err, fs.ErrNotExist) {
			if i == len(parts)-1 {
				next, err = mkdirIn(dir, part, mode, uid, gid)
			} else {
				next, err = mkdirIn(dir, part, 0o755, 0, 0)
			}
		}
		dir.Close()
		if err != nil {
			return err
		}
		dir = next
	}
	return dir.Close()
}

// mkdirIn makes the directory name in dir with mode and owner, setting
// both through a handle of the new directory, which cannot be swapped for
// a link in between.
func mkdirIn(dir *os.File, name string, mode os.FileMode, uid, gid int) (*os.File, error) {
	path := filepath.Join(dir.Name(), name)
	if err := unix.Mkdirat(int(dir.Fd()), name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, &os.PathError{Op: "mkdir", Path: path, Err: err}
	}
	f, err := OpenIn(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReachableError is a path that host users other than root can reach.
type ReachableError struct {
	Path string
	// Why is what lets them in, e.g. "/srv has mode 0755".
	Why string
}

// Is makes a reachable tree a fault.Invalid setting.
func (e *ReachableError) Is(target error) bool { return target == fault.Invalid }

func (e *ReachableError) Error() string {
	return fmt.Sprintf("host users other than root can reach %s (%s)", e.Path, e.Why)
}

// CheckClosed returns nil when host users other than root cannot reach
// path: one of its parents (not path itself, which whoever writes into the
// tree could open up) is owned by root and searchable by neither others nor
// a group other than root's. Otherwise it returns a *ReachableError naming
// the nearest parent and what lets others pass it.
func CheckClosed(path string) error {
	path = filepath.Clean(path)
	var nearest string
	var why string
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return &os.PathError{Op: "stat", Path: dir, Err: err}
		}
		mode := st.Mode & 0o777
		switch {
		case st.Uid != 0:
			why = fmt.Sprintf("%s belongs to user %d", dir, st.Uid)
		case mode&0o001 != 0:
			why = fmt.Sprintf("%s has mode %04o", dir, mode)
		case mode&0o010 != 0 && st.Gid != 0:
			why = fmt.Sprintf("%s has mode %04o and group %d", dir, mode, st.Gid)
		default:
			return nil
		}
		if nearest == "" {
			nearest = why
		}
		if dir == "/" {
			return &ReachableError{Path: path, Why: nearest}
		}
	}
}
