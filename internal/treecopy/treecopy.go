// Package treecopy owns copying a container's file tree on the host: into
// another directory (clone, snapshot, restore) or to and from an archive
// (export, import), with the owners shifted from one ID range to another.
//
// A container's tree is hostile (README, Security): it may hold links,
// FIFOs, device nodes and hard links planted to turn the host's root onto
// other files, and may change while it is read unless the container is
// frozen. So the tree is walked by file descriptor: every entry is opened
// with O_PATH|O_NOFOLLOW below its directory's descriptor and examined with
// fstat, a regular file is read through that very descriptor (reopened by
// /proc/self/fd), never by its name again, a link is read and recreated as
// a link, a FIFO is recreated, never opened, and nothing crosses into
// another file system. What is written goes below a directory the host
// made, through the descriptors of the directories made there, and owners,
// modes (setuid and setgid bits included, which chown clears), file
// capabilities and ACLs (whose IDs are shifted too) and times are set
// through descriptors, after the owner.
package treecopy

import (
	"fmt"
	"strings"
)

// Shift maps the owners of a tree's files from one ID range to another:
// the IDs From..From+Size-1 become To..To+Size-1. An ID outside the source
// range (none of a container's own files has one) becomes the target
// range's overflow ID, its nobody (65534), as the container saw it.
//
// It is not hostfs.Shift, which changes a tree's owners in place (adopt
// moves a nixos-container root into nixcell and shifts it there, and back
// on undo, so it leaves an ID outside the range as it is, to stay
// reversible): this one writes a copy, where the source stays as it was
// and an ID the target range cannot hold has to become something in it.
type Shift struct {
	From, To uint32
	// Size is the number of IDs of both ranges; 0 keeps every ID as it
	// is (a privileged container's tree, whose IDs are the host's).
	Size uint32
}

// Identity tells whether the shift keeps IDs as they are.
func (s Shift) Identity() bool { return s.Size == 0 }

// overflowID is the ID the kernel shows for an unmapped one, nobody.
const overflowID = 65534

// Map returns the ID id becomes; ok is false when id is outside the source
// range and became the overflow ID.
func (s Shift) Map(id uint32) (uint32, bool) {
	if s.Identity() {
		return id, true
	}
	if id >= s.From && uint64(id) < uint64(s.From)+uint64(s.Size) {
		return id - s.From + s.To, true
	}
	return s.To + min(overflowID, s.Size-1), false
}

// Options say how a tree is copied.
type Options struct {
	Shift Shift
	// Progress, when set, is called with the number of content bytes
	// done so far, after every chunk.
	Progress func(done int64)
}

// Stats count what a copy did.
type Stats struct {
	Dirs, Files, Symlinks, Hardlinks, Special int
	// Bytes is the content of the regular files; Cloned, the part of it
	// shared with the source by reflinks (copy-on-write: no data written).
	Bytes, Cloned int64
	// Unmapped counts entries whose owner (or file capability, ACL entry)
	// was outside the source range.
	Unmapped int
	// Skipped lists what was not copied and why, up to maxSkipped
	// entries; SkippedCount counts them all.
	Skipped      []string
	SkippedCount int
}

const maxSkipped = 20

func (s *Stats) skip(path, why string) {
	s.SkippedCount++
	if len(s.Skipped) < maxSkipped {
		s.Skipped = append(s.Skipped, fmt.Sprintf("/%s (%s)", path, why))
	}
}

// Summary is one line for people: how much was copied and what was not.
func (s Stats) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d files, %d directories, %d links, %s", s.Files+s.Hardlinks, s.Dirs, s.Symlinks, Bytes(s.Bytes))
	if s.Cloned > 0 {
		fmt.Fprintf(&b, " (%s shared copy-on-write)", Bytes(s.Cloned))
	}
	if s.Unmapped > 0 {
		fmt.Fprintf(&b, "; %d owners outside the container's ID range became nobody", s.Unmapped)
	}
	if s.SkippedCount > 0 {
		fmt.Fprintf(&b, "; %d entries skipped: %s", s.SkippedCount, strings.Join(s.Skipped, ", "))
		if s.SkippedCount > len(s.Skipped) {
			b.WriteString(", ...")
		}
	}
	return b.String()
}

// Bytes formats a size for people, in powers of 1024.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// kind is what an entry of a tree is.
type kind uint8

const (
	kindDir kind = iota
	kindRegular
	kindSymlink
	kindHardlink // another name of a regular file met before
	kindFIFO
	kindSocket
	kindChar
	kindBlock
)

// entry is one file of a tree, with its owners already shifted.
type entry struct {
	// path is relative to the tree's top, slash-separated; "" is the top.
	path string
	kind kind
	// mode is the permission bits with setuid, setgid and sticky.
	mode     uint32
	uid, gid uint32
	size     int64  // of a regular file's content
	rdev     uint64 // of a device node
	// link is a symbolic link's target, or, for a hard link, the path of
	// the first name of its file.
	link string
	// mtime and atime in nanoseconds since the epoch.
	mtime, atime int64
	xattrs       []xattr
}

func (e *entry) name() string {
	if i := strings.LastIndexByte(e.path, '/'); i >= 0 {
		return e.path[i+1:]
	}
	return e.path
}

// parent is the path of the directory that holds e ("" for the top's
// children).
func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// maxDepth bounds how deep a tree may nest: each level holds two
// descriptors while it is copied.
const maxDepth = 512

// validPath tells whether p is a clean relative path of a tree, as an
// archive must give it: no empty, "." or ".." component, no NUL.
func validPath(p string) bool {
	if p == "" || strings.ContainsRune(p, 0) || len(p) > 4096 {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." || len(c) > 255 {
			return false
		}
	}
	return true
}
