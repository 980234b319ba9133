package treecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Copy copies the directory tree src into dst, an open, empty directory
// that the host made and no container can reach, shifting owners with
// opts.Shift; dst takes src's own owner, mode and times. File contents are
// shared copy-on-write where the file system can (FICLONE: btrfs, XFS),
// holes are kept, and the rest is copied in the kernel (copy_file_range).
// On error, what was copied stays in dst for the caller to remove.
func Copy(ctx context.Context, src, dst *os.File, opts Options) (Stats, error) {
	var st Stats
	s := &dirSink{top: dst, stats: &st, clone: true, progress: opts.Progress}
	w := &walker{ctx: ctx, shift: opts.Shift, sink: s, stats: &st}
	err := w.walk(src)
	s.closeAll()
	if err == nil {
		// One flush of the file system instead of one per file.
		err = unix.Syncfs(int(dst.Fd()))
	}
	return st, err
}

// dirSink writes a tree below the directory top.
type dirSink struct {
	top *os.File
	// dirs are the open directories from the top to the one being
	// written, top included.
	dirs     []*os.File
	stats    *Stats
	clone    bool // FICLONE may work here (until it fails as unsupported)
	progress func(int64)
	done     int64
}

func (s *dirSink) current() *os.File { return s.dirs[len(s.dirs)-1] }

func (s *dirSink) closeAll() {
	for _, d := range s.dirs {
		if d != s.top {
			d.Close()
		}
	}
	s.dirs = nil
}

func (s *dirSink) enter(e *entry) error {
	if e.path == "" {
		s.dirs = []*os.File{s.top}
		return nil
	}
	parent := s.current()
	if err := unix.Mkdirat(int(parent.Fd()), e.name(), 0o700); err != nil {
		return fmt.Errorf("creating /%s: %w", e.path, err)
	}
	fd, err := unix.Openat(int(parent.Fd()), e.name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /%s: %w", e.path, err)
	}
	s.dirs = append(s.dirs, os.NewFile(uintptr(fd), e.path))
	return nil
}

// leave gives a directory its metadata once everything in it is written
// (its modification time last).
func (s *dirSink) leave(e *entry) error {
	d := s.current()
	s.dirs = s.dirs[:len(s.dirs)-1]
	if d != s.top {
		defer d.Close()
	}
	return s.setMeta(d, e)
}

// setMeta sets the owner, then the mode (chown clears setuid and setgid),
// then the extended attributes (chown clears file capabilities), then the
// times of a file the sink made.
func (s *dirSink) setMeta(f *os.File, e *entry) error {
	fd := int(f.Fd())
	if err := unix.Fchown(fd, int(e.uid), int(e.gid)); err != nil {
		return fmt.Errorf("chown /%s: %w", e.path, err)
	}
	if err := unix.Fchmod(fd, e.mode); err != nil {
		return fmt.Errorf("chmod /%s: %w", e.path, err)
	}
	for _, x := range e.xattrs {
		if err := unix.Fsetxattr(fd, x.name, x.value, 0); err != nil {
			return fmt.Errorf("setting %s on /%s: %w", x.name, e.path, err)
		}
	}
	if err := unix.Futimes(fd, timevals(e)); err != nil {
		return fmt.Errorf("setting the times of /%s: %w", e.path, err)
	}
	return nil
}

func timevals(e *entry) []unix.Timeval {
	return []unix.Timeval{unix.NsecToTimeval(e.atime), unix.NsecToTimeval(e.mtime)}
}

func timespecs(e *entry) []unix.Timespec {
	return []unix.Timespec{unix.NsecToTimespec(e.atime), unix.NsecToTimespec(e.mtime)}
}

func (s *dirSink) file(e *entry, content io.Reader, src *os.File) error {
	parent := s.current()
	fd, err := unix.Openat(int(parent.Fd()), e.name(), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("creating /%s: %w", e.path, err)
	}
	f := os.NewFile(uintptr(fd), e.path)
	defer f.Close()
	if src != nil {
		err = s.copyFrom(f, src, e.size)
	} else {
		err = s.writeFrom(f, content, e.size)
	}
	if err != nil {
		return fmt.Errorf("copying /%s: %w", e.path, err)
	}
	return s.setMeta(f, e)
}

func (s *dirSink) other(e *entry) error {
	dir := int(s.current().Fd())
	name := e.name()
	switch e.kind {
	case kindHardlink:
		return s.hardlink(e)
	case kindSymlink:
		if err := unix.Symlinkat(e.link, dir, name); err != nil {
			return fmt.Errorf("creating the link /%s: %w", e.path, err)
		}
		if err := unix.Fchownat(dir, name, int(e.uid), int(e.gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown /%s: %w", e.path, err)
		}
		return setTimesAt(dir, name, e)
	}
	mode := map[kind]uint32{kindFIFO: unix.S_IFIFO, kindSocket: unix.S_IFSOCK, kindChar: unix.S_IFCHR, kindBlock: unix.S_IFBLK}[e.kind]
	if err := unix.Mknodat(dir, name, mode|0o600, int(e.rdev)); err != nil {
		return fmt.Errorf("creating /%s: %w", e.path, err)
	}
	// The node was just made in a directory only the host can reach, so
	// its name still leads to it; a node cannot be opened to be changed
	// through a descriptor without being opened for I/O.
	if err := unix.Fchownat(dir, name, int(e.uid), int(e.gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown /%s: %w", e.path, err)
	}
	if err := unix.Fchmodat(dir, name, e.mode, 0); err != nil {
		return fmt.Errorf("chmod /%s: %w", e.path, err)
	}
	return setTimesAt(dir, name, e)
}

// hardlink makes e another name of the file written at e.link, which is
// found below the top without following a link.
func (s *dirSink) hardlink(e *entry) error {
	dir := s.top
	if p := parentOf(e.link); p != "" {
		how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := unix.Openat2(int(s.top.Fd()), p, how)
		if err != nil {
			return fmt.Errorf("hard link /%s: finding /%s: %w", e.path, e.link, err)
		}
		dir = os.NewFile(uintptr(fd), p)
		defer dir.Close()
	}
	base := (&entry{path: e.link}).name()
	if err := unix.Linkat(int(dir.Fd()), base, int(s.current().Fd()), e.name(), 0); err != nil {
		return fmt.Errorf("hard link /%s to /%s: %w", e.path, e.link, err)
	}
	return nil
}

// copyChunk is how much is copied between two progress reports.
const copyChunk = 8 << 20

func (s *dirSink) advance(n int64) {
	s.done += n
	if s.progress != nil {
		s.progress(s.done)
	}
}

// copyFrom copies size bytes of src into the new, empty dst: a reflink
// where the file system shares extents, otherwise the data segments only
// (holes stay holes), in the kernel.
func (s *dirSink) copyFrom(dst, src *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	if s.clone {
		err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
		if err == nil {
			s.stats.Cloned += size
			s.advance(size)
			return nil
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) {
			s.clone = false // not on this file system: do not ask again
		}
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return s.copyPlain(dst, src, off, size)
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if err := s.copyRange(dst, src, data, hole); err != nil {
			return err
		}
		s.advance(data - off)
		off = hole
	}
	return dst.Truncate(size)
}

// copyRange copies src's bytes from..to to the same offsets of dst.
func (s *dirSink) copyRange(dst, src *os.File, from, to int64) error {
	for roff, woff := from, from; roff < to; {
		n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(to-roff, copyChunk)), 0)
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			return s.copyPlain(dst, src, roff, to)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil // the file shrank: the rest reads as zeros
		}
		s.advance(int64(n))
	}
	return nil
}

// copyPlain copies src's bytes from..to by reading and writing.
func (s *dirSink) copyPlain(dst, src *os.File, from, to int64) error {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), to-off)], off)
		if n > 0 {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
			off += int64(n)
			s.advance(int64(n))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeFrom writes size bytes from r into the new, empty dst, leaving
// blocks of zeros as holes.
func (s *dirSink) writeFrom(dst *os.File, r io.Reader, size int64) error {
	const block = 64 << 10
	buf := make([]byte, block)
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(block, size-off)])
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
			s.advance(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return dst.Truncate(size)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// setTimesAt sets the times of the entry name of dir, not following a link.
func setTimesAt(dir int, name string, e *entry) error {
	if err := unix.UtimesNanoAt(dir, name, timespecs(e), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting the times of /%s: %w", e.path, err)
	}
	return nil
}
