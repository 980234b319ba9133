package hostfs

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/idxattr"
)

// Shift moves the owners of every file in the tree at root (root
// included) from one ID range to another: an owner id in [From, From+Size)
// becomes To + (id - From), for users and groups alike. It walks the tree
// by directory handles and changes each entry through its parent's handle
// without following links, so a link in the tree never turns it onto
// another file. The set-user-ID, set-group-ID bits and file capabilities
// that chown clears are put back, a capability's root ID shifted too
// (revision 2 capabilities, the host root's, become revision 3 ones for
// To, the range's root: otherwise a tree moved from a privileged container
// into a range would keep capabilities its new root cannot use). The named
// users and groups of POSIX ACLs are shifted as owners are. The tree must
// not change meanwhile (its container stopped or frozen).
type Shift struct {
	From, Size, To uint32
}

// OutOfRangeError lists files whose owner is not in the range Shift moves:
// they are left as they are.
type OutOfRangeError struct {
	Count    int
	Examples []string
}

func (e *OutOfRangeError) Error() string {
	return fmt.Sprintf("%d files are owned by IDs outside the range (for example %v); they were left as they were", e.Count, e.Examples)
}

// Apply shifts the tree at root; it returns an *OutOfRangeError (after
// shifting everything else) when some owners were outside the range.
func (s Shift) Apply(root string) error {
	dir, err := Open(root, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer dir.Close()
	out := &OutOfRangeError{}
	// The root itself, through its parent.
	parent, err := Open(filepath.Dir(root), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	err = s.entry(parent, filepath.Base(root), root, out)
	parent.Close()
	if err != nil {
		return err
	}
	if err := s.walk(dir, root, out); err != nil {
		return err
	}
	if out.Count > 0 {
		return out
	}
	return nil
}

func (s Shift) walk(dir *os.File, path string, out *OutOfRangeError) error {
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	for _, name := range names {
		p := filepath.Join(path, name)
		if err := s.entry(dir, name, p, out); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := OpenIn(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = s.walk(sub, p, out)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s Shift) move(id uint32) (uint32, bool) {
	if id < s.From || id-s.From >= s.Size {
		return id, false
	}
	return s.To + (id - s.From), true
}

// entry shifts one directory entry's owner, keeping its special bits and
// capabilities.
func (s Shift) entry(dir *os.File, name, path string, out *OutOfRangeError) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	uid, okU := s.move(st.Uid)
	gid, okG := s.move(st.Gid)
	if !okU || !okG {
		out.Count++
		if len(out.Examples) < 5 {
			out.Examples = append(out.Examples, fmt.Sprintf("%s (%d:%d)", path, st.Uid, st.Gid))
		}
		return nil
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFREG && kind != unix.S_IFDIR {
		if err := unix.Fchownat(int(dir.Fd()), name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", path, err)
		}
		return nil
	}
	// Regular files and directories, the ones with attributes to carry:
	// through a handle of the file itself, opened without following a
	// link.
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if kind == unix.S_IFDIR {
		flags |= unix.O_DIRECTORY
	}
	f, err := OpenIn(dir, name, flags, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	caps := getxattr(fd, idxattr.Capability)
	if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	for _, acl := range []string{idxattr.ACLAccess, idxattr.ACLDefault} {
		if v := getxattr(fd, acl); v != nil {
			// Named IDs outside the range stay, as owners outside it do.
			v, _ = idxattr.ShiftACL(v, s.move)
			if err := unix.Fsetxattr(fd, acl, v, 0); err != nil {
				return fmt.Errorf("shifting the ACL of %s: %w", path, err)
			}
		}
	}
	if kind != unix.S_IFREG || st.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 && caps == nil {
		return nil
	}
	// chown cleared them: put them back.
	if err := f.Chmod(os.FileMode(st.Mode&0o777) | modeBits(st.Mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if caps != nil {
		// Capabilities for a root outside the range stay as they were.
		if shifted, ok := idxattr.ShiftCapability(caps, s.move, s.To); ok {
			caps = shifted
		}
		if err := unix.Fsetxattr(fd, idxattr.Capability, caps, 0); err != nil {
			return fmt.Errorf("restoring the capabilities of %s: %w", path, err)
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var b os.FileMode
	if m&unix.S_ISUID != 0 {
		b |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		b |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		b |= os.ModeSticky
	}
	return b
}

// getxattr returns an attribute of the open file, nil when it has none.
func getxattr(fd int, name string) []byte {
	buf := make([]byte, 1024)
	n, err := unix.Fgetxattr(fd, name, buf)
	if err == unix.ERANGE {
		if n, err = unix.Fgetxattr(fd, name, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Fgetxattr(fd, name, buf)
		}
	}
	if err != nil || n == 0 {
		return nil
	}
	return buf[:n]
}
