package hostfs

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Shift moves the owners of every file in the tree at root (root
// included) from one ID range to another: an owner id in [From, From+Size)
// becomes To + (id - From), for users and groups alike. It walks the tree
// by directory handles and changes each entry through its parent's handle
// without following links, so a link in the tree never turns it onto
// another file. The set-user-ID, set-group-ID bits and file capabilities
// that chown clears are put back (a capability's root ID is shifted too).
// The tree must not change meanwhile (its container stopped or frozen).
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
	var caps []byte
	if kind == unix.S_IFREG {
		caps = readCaps(dir, name)
	}
	if err := unix.Fchownat(int(dir.Fd()), name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if kind != unix.S_IFREG || st.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 && caps == nil {
		return nil
	}
	// chown cleared them: through a handle of the file itself (a regular
	// file, opened without following a link), put them back.
	f, err := OpenIn(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(os.FileMode(st.Mode&0o777) | modeBits(st.Mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if caps != nil {
		if err := unix.Fsetxattr(int(f.Fd()), "security.capability", s.shiftCaps(caps), 0); err != nil {
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

// readCaps returns a regular file's security.capability attribute, nil
// when it has none.
func readCaps(dir *os.File, name string) []byte {
	f, err := OpenIn(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, err := unix.Fgetxattr(int(f.Fd()), "security.capability", buf)
	if err != nil || n == 0 {
		return nil
	}
	return buf[:n]
}

// A version 3 capability attribute (VFS_CAP_REVISION_3) ends with the
// host ID of the root of the user namespace it belongs to.
const vfsCapV3Size = 24

func (s Shift) shiftCaps(caps []byte) []byte {
	if len(caps) != vfsCapV3Size || binary.LittleEndian.Uint32(caps)&0xff000000 != 0x03000000 {
		return caps
	}
	out := append([]byte(nil), caps...)
	if root, ok := s.move(binary.LittleEndian.Uint32(caps[20:])); ok {
		binary.LittleEndian.PutUint32(out[20:], root)
	}
	return out
}
