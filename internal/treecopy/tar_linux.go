package treecopy

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// xattrRecord is the PAX record prefix of extended attributes, as GNU tar
// and bsdtar write them.
const xattrRecord = "SCHILY.xattr."

// TarWriter is where WriteTar writes: an archive/tar Writer, or one that
// also sums what passes.
type TarWriter interface {
	WriteHeader(h *tar.Header) error
	Write(b []byte) (int, error)
}

// WriteTar writes the tree below the directory src to tw, each entry named
// prefix followed by its path (the top is prefix itself), owners shifted
// with opts.Shift. Sockets cannot be archived and are skipped.
func WriteTar(ctx context.Context, src *os.File, tw TarWriter, prefix string, opts Options) (Stats, error) {
	var st Stats
	s := &tarSink{tw: tw, prefix: prefix, stats: &st, progress: opts.Progress}
	w := &walker{ctx: ctx, shift: opts.Shift, sink: s, stats: &st}
	return st, w.walk(src)
}

type tarSink struct {
	tw       TarWriter
	prefix   string
	stats    *Stats
	progress func(int64)
	done     int64
}

func (s *tarSink) header(e *entry) *tar.Header {
	h := &tar.Header{
		Name: s.prefix + e.path, Mode: int64(e.mode), Uid: int(e.uid), Gid: int(e.gid),
		ModTime: time.Unix(0, e.mtime), Format: tar.FormatPAX,
	}
	for _, x := range e.xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[xattrRecord+x.name] = string(x.value)
	}
	return h
}

func (s *tarSink) enter(e *entry) error {
	h := s.header(e)
	h.Typeflag = tar.TypeDir
	if e.path != "" {
		h.Name += "/"
	}
	return s.tw.WriteHeader(h)
}

func (s *tarSink) leave(*entry) error { return nil }

func (s *tarSink) file(e *entry, content io.Reader, _ *os.File) error {
	h := s.header(e)
	h.Typeflag, h.Size = tar.TypeReg, e.size
	if err := s.tw.WriteHeader(h); err != nil {
		return err
	}
	// The header promised e.size bytes: a file that shrank meanwhile is
	// padded with zeros, one that grew is cut.
	n, err := io.Copy(s.tw, &progressReader{r: io.LimitReader(content, e.size), s: s})
	if err != nil {
		return fmt.Errorf("archiving /%s: %w", e.path, err)
	}
	if n < e.size {
		if _, err := io.Copy(s.tw, io.LimitReader(zeros{}, e.size-n)); err != nil {
			return err
		}
	}
	return nil
}

func (s *tarSink) other(e *entry) error {
	h := s.header(e)
	switch e.kind {
	case kindSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
	case kindHardlink:
		h.Typeflag, h.Linkname = tar.TypeLink, s.prefix+e.link
	case kindFIFO:
		h.Typeflag = tar.TypeFifo
	case kindChar, kindBlock:
		h.Typeflag = tar.TypeChar
		if e.kind == kindBlock {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(e.rdev)), int64(unix.Minor(e.rdev))
	default:
		s.stats.Special--
		s.stats.skip(e.path, "a socket cannot be archived; its program makes it again")
		return nil
	}
	return s.tw.WriteHeader(h)
}

type progressReader struct {
	r io.Reader
	s *tarSink
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.s.done += int64(n)
	if p.s.progress != nil && n > 0 {
		p.s.progress(p.s.done)
	}
	return n, err
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// TreeReader rebuilds a tree from the entries of an archive named prefix
// followed by their paths, in the order WriteTar writes them (a directory
// before what it holds), owners shifted. With no destination it only
// checks them: their names, order, kinds and hard links.
type TreeReader struct {
	prefix string
	shift  Shift
	sink   sink
	stats  Stats
	// open are the directories entered and not yet left, from the top.
	open []*entry
	// paths are the paths met, each with its kind: none may come twice,
	// and a hard link must name a regular file met before.
	paths map[string]kind
	seen  bool // the top was met
}

// NewTreeReader returns a reader that writes below dst, an open, empty
// directory the host made, or that only checks when dst is nil.
func NewTreeReader(prefix string, dst *os.File, opts Options) *TreeReader {
	r := &TreeReader{prefix: prefix, shift: opts.Shift, paths: map[string]kind{}}
	if dst != nil {
		r.sink = &dirSink{top: dst, stats: &r.stats, progress: opts.Progress}
	} else {
		r.sink = checkSink{}
	}
	return r
}

// ErrBadTree is what a tree that an archive holds wrongly is reported as.
var ErrBadTree = errors.New("bad tree entry")

// Add takes the next entry of the tree; content is a regular file's.
func (r *TreeReader) Add(h *tar.Header, content io.Reader) error {
	e, err := r.entryOf(h)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadTree, h.Name, err)
	}
	if _, dup := r.paths[e.path]; dup {
		return fmt.Errorf("%w: %s comes twice", ErrBadTree, h.Name)
	}
	r.paths[e.path] = e.kind
	if e.path == "" {
		if r.seen || e.kind != kindDir {
			return fmt.Errorf("%w: %s: the top must come first, once, as a directory", ErrBadTree, h.Name)
		}
		r.seen = true
	} else {
		parent := parentOf(e.path)
		for len(r.open) > 0 && r.open[len(r.open)-1].path != parent {
			if err := r.sink.leave(r.open[len(r.open)-1]); err != nil {
				return err
			}
			r.open = r.open[:len(r.open)-1]
		}
		if len(r.open) == 0 {
			return fmt.Errorf("%w: %s comes after its directory was closed or before it was opened", ErrBadTree, h.Name)
		}
	}
	switch e.kind {
	case kindDir:
		if len(r.open) >= maxDepth {
			return fmt.Errorf("%w: %s: directories nested deeper than %d levels", ErrBadTree, h.Name, maxDepth)
		}
		r.stats.Dirs++
		r.open = append(r.open, e)
		return r.sink.enter(e)
	case kindRegular:
		r.stats.Files++
		r.stats.Bytes += e.size
		return r.sink.file(e, content, nil)
	case kindHardlink:
		if k, ok := r.paths[e.link]; !ok || k != kindRegular {
			return fmt.Errorf("%w: %s: a hard link to %s, which is no regular file before it", ErrBadTree, h.Name, h.Linkname)
		}
		r.stats.Hardlinks++
	case kindSymlink:
		r.stats.Symlinks++
	default:
		r.stats.Special++
	}
	return r.sink.other(e)
}

// Finish leaves the directories still open and reports what was read.
func (r *TreeReader) Finish() (Stats, error) {
	if !r.seen {
		return r.stats, fmt.Errorf("%w: the archive holds no tree", ErrBadTree)
	}
	for i := len(r.open) - 1; i >= 0; i-- {
		if err := r.sink.leave(r.open[i]); err != nil {
			return r.stats, err
		}
	}
	r.open = nil
	if d, ok := r.sink.(*dirSink); ok {
		d.closeAll()
		if err := unix.Syncfs(int(d.top.Fd())); err != nil {
			return r.stats, err
		}
	}
	return r.stats, nil
}

// Abort closes what an unfinished rebuild holds open.
func (r *TreeReader) Abort() {
	if d, ok := r.sink.(*dirSink); ok {
		d.closeAll()
	}
}

// entryOf turns an archive header into an entry, checking it.
func (r *TreeReader) entryOf(h *tar.Header) (*entry, error) {
	rel, ok := strings.CutPrefix(h.Name, r.prefix)
	if !ok {
		return nil, fmt.Errorf("not below %s", r.prefix)
	}
	rel = strings.TrimSuffix(rel, "/")
	if rel != "" && !validPath(rel) {
		return nil, errors.New("not a clean relative path")
	}
	if h.Uid < 0 || h.Gid < 0 || h.Uid > 1<<32-1 || h.Gid > 1<<32-1 || h.Size < 0 || h.Mode&^0o7777 != 0 {
		return nil, errors.New("bad owner, size or mode")
	}
	uid, uok := r.shift.Map(uint32(h.Uid))
	gid, gok := r.shift.Map(uint32(h.Gid))
	if !uok || !gok {
		r.stats.Unmapped++
	}
	e := &entry{path: rel, mode: uint32(h.Mode), uid: uid, gid: gid, mtime: h.ModTime.UnixNano()}
	e.atime = e.mtime
	switch h.Typeflag {
	case tar.TypeDir:
		e.kind = kindDir
	case tar.TypeReg:
		e.kind, e.size = kindRegular, h.Size
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) || len(h.Linkname) > 4095 {
			return nil, errors.New("bad link target")
		}
		e.kind, e.link = kindSymlink, h.Linkname
	case tar.TypeLink:
		target, ok := strings.CutPrefix(h.Linkname, r.prefix)
		if !ok || !validPath(target) {
			return nil, errors.New("a hard link outside the tree")
		}
		e.kind, e.link = kindHardlink, target
	case tar.TypeFifo:
		e.kind = kindFIFO
	case tar.TypeChar, tar.TypeBlock:
		if !r.shift.Identity() && (h.Devmajor != 0 || h.Devminor != 0) {
			return nil, errors.New("a device node, which an unprivileged container cannot have")
		}
		e.kind = kindChar
		if h.Typeflag == tar.TypeBlock {
			e.kind = kindBlock
		}
		e.rdev = unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
	default:
		return nil, fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	if e.path == "" && e.kind != kindDir {
		return nil, errors.New("the top is not a directory")
	}
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrRecord)
		if !ok || !copiedXattr(name) {
			continue
		}
		val, keep, unmapped := r.shift.shiftXattr(name, []byte(v))
		if unmapped {
			r.stats.Unmapped++
		}
		if keep {
			e.xattrs = append(e.xattrs, xattr{name, val})
		}
	}
	return e, nil
}

// checkSink accepts everything: TreeReader checks the tree itself.
type checkSink struct{}

func (checkSink) enter(*entry) error { return nil }
func (checkSink) leave(*entry) error { return nil }
func (checkSink) file(_ *entry, content io.Reader, _ *os.File) error {
	_, err := io.Copy(io.Discard, content)
	return err
}
func (checkSink) other(*entry) error { return nil }
