package treecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// sink receives a tree in order: a directory is entered before what it
// holds and left after it; the top is entered first and left last.
type sink interface {
	enter(e *entry) error
	leave(e *entry) error
	// file receives a regular file with its content, e.size bytes (a
	// source may hold fewer: the rest reads as zeros).
	file(e *entry, content io.Reader, src *os.File) error
	// other receives a link, a hard link, a FIFO, a socket or a device
	// node.
	other(e *entry) error
}

// walker reads a directory tree from the host by descriptor and hands it
// to a sink.
type walker struct {
	ctx   context.Context
	shift Shift
	sink  sink
	stats *Stats
	dev   uint64
	// links records the first path of each file with several names.
	links map[[2]uint64]string
}

// walk hands the tree below the open directory top to the sink.
func (w *walker) walk(top *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(top.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", top.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", top.Name())
	}
	w.dev = st.Dev
	w.links = map[[2]uint64]string{}
	e := w.entryOf("", &st)
	w.readXattrs(int(top.Fd()), e)
	return w.dir(top, e, 0)
}

// entryOf describes the file st under path, owners shifted.
func (w *walker) entryOf(path string, st *unix.Stat_t) *entry {
	uid, uok := w.shift.Map(st.Uid)
	gid, gok := w.shift.Map(st.Gid)
	if !uok || !gok {
		w.stats.Unmapped++
	}
	return &entry{
		path: path, mode: st.Mode & 0o7777, uid: uid, gid: gid,
		mtime: st.Mtim.Nano(), atime: st.Atim.Nano(),
	}
}

func (w *walker) dir(d *os.File, e *entry, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("/%s: directories nested deeper than %d levels", e.path, maxDepth)
	}
	e.kind = kindDir
	if err := w.sink.enter(e); err != nil {
		return err
	}
	w.stats.Dirs++
	names, err := readNames(d)
	if err != nil {
		return fmt.Errorf("reading /%s: %w", e.path, err)
	}
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		p := name
		if e.path != "" {
			p = e.path + "/" + name
		}
		if err := w.child(d, name, p, depth); err != nil {
			return err
		}
	}
	return w.sink.leave(e)
}

// child hands one entry of the directory d to the sink. It is opened
// without following a link and without being opened for reading (O_PATH),
// so that neither a link nor a FIFO the container planted does anything;
// what it is comes from that descriptor, and a regular file is read
// through it.
func (w *walker) child(d *os.File, name, path string, depth int) error {
	fd, err := unix.Openat(int(d.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil // removed meanwhile (a running, unfrozen tree)
	}
	if err != nil {
		return fmt.Errorf("opening /%s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("/%s: %w", path, err)
	}
	if st.Dev != w.dev {
		w.stats.skip(path, "another file system is mounted there")
		return nil
	}
	e := w.entryOf(path, &st)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		dfd, err := reopen(fd, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("opening /%s: %w", path, err)
		}
		sub := os.NewFile(uintptr(dfd), path)
		defer sub.Close()
		w.readXattrs(dfd, e)
		return w.dir(sub, e, depth+1)
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := w.links[key]; ok {
			e.kind, e.link = kindHardlink, first
			w.stats.Hardlinks++
			return w.sink.other(e)
		}
		if st.Nlink > 1 {
			w.links[key] = path
		}
		ffd, err := reopen(fd, unix.O_RDONLY|unix.O_NOCTTY)
		if err != nil {
			return fmt.Errorf("opening /%s: %w", path, err)
		}
		f := os.NewFile(uintptr(ffd), path)
		defer f.Close()
		e.kind, e.size = kindRegular, st.Size
		w.readXattrs(ffd, e)
		w.stats.Files++
		w.stats.Bytes += st.Size
		return w.sink.file(e, f, f)
	case unix.S_IFLNK:
		target, err := readlink(fd)
		if err != nil {
			return fmt.Errorf("reading the link /%s: %w", path, err)
		}
		e.kind, e.link = kindSymlink, target
		w.stats.Symlinks++
		return w.sink.other(e)
	case unix.S_IFIFO:
		e.kind = kindFIFO
	case unix.S_IFSOCK:
		e.kind = kindSocket
	case unix.S_IFCHR:
		e.kind, e.rdev = kindChar, st.Rdev
	case unix.S_IFBLK:
		e.kind, e.rdev = kindBlock, st.Rdev
	default:
		w.stats.skip(path, "unknown file type")
		return nil
	}
	if (e.kind == kindChar || e.kind == kindBlock) && !w.shift.Identity() && st.Rdev != 0 {
		// An unprivileged container cannot make device nodes (only
		// overlayfs's whiteouts, 0:0); one that is there was put there
		// from outside and is not carried into another range.
		w.stats.skip(path, "device node")
		return nil
	}
	w.stats.Special++
	return w.sink.other(e)
}

// readXattrs adds the copied extended attributes of the open file fd to e,
// shifted.
func (w *walker) readXattrs(fd int, e *entry) {
	names, err := listXattrs(fd)
	if err != nil {
		return
	}
	for _, n := range names {
		if !copiedXattr(n) {
			continue
		}
		v, err := getXattr(fd, n)
		if err != nil {
			continue
		}
		v, keep, unmapped := w.shift.shiftXattr(n, v)
		if unmapped {
			w.stats.Unmapped++
		}
		if keep {
			e.xattrs = append(e.xattrs, xattr{n, v})
		}
	}
	slices.SortFunc(e.xattrs, func(a, b xattr) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
}

// reopen opens the file behind an O_PATH descriptor for I/O: the same
// inode, whatever its name now leads to.
func reopen(fd, flags int) (int, error) {
	return unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC, 0)
}

// readNames lists a directory's entries, sorted, so that copies and
// archives of the same tree come out the same.
func readNames(d *os.File) ([]string, error) {
	if _, err := d.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<16 {
			return "", unix.ENAMETOOLONG
		}
	}
}

func listXattrs(fd int) ([]string, error) {
	for size := 1024; size <= 1<<20; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
	return nil, unix.E2BIG
}

func getXattr(fd int, name string) ([]byte, error) {
	for size := 256; size <= 1<<20; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.E2BIG
}
