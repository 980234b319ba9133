package cell

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/treecopy"
)

// What clone, snapshots, export and import share: the trees of a container
// that they copy, holding a running container still while they do, and
// making a new container's record as create does.

// Progress receives how many bytes of a stage of a long copy ("copying",
// "checking", "importing") are done so far.
type Progress func(stage string, done int64)

// of is the progress of one stage, for the tree copier; nil stays nil.
func (p Progress) of(stage string) func(int64) {
	if p == nil {
		return nil
	}
	return func(done int64) { p(stage, done) }
}

// CopyStats says what a copy of a container's files did.
type CopyStats struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Cloned is the part of Bytes shared copy-on-write with the source
	// (reflinks): no data was written for it.
	Cloned int64 `json:"cloned"`
	// Summary is the same for people, with what was skipped.
	Summary string `json:"summary"`
}

func copyStatsOf(st treecopy.Stats) CopyStats {
	return CopyStats{Files: st.Files + st.Hardlinks, Bytes: st.Bytes, Cloned: st.Cloned, Summary: st.Summary()}
}

func (c *CopyStats) add(st treecopy.Stats) {
	c.Files += st.Files + st.Hardlinks
	c.Bytes += st.Bytes
	c.Cloned += st.Cloned
	if c.Summary == "" {
		c.Summary = st.Summary()
	}
}

// ErrNotCopyable is the class of containers whose files nixcell does not
// keep, so cannot copy.
var ErrNotCopyable = fault.New(fault.Invalid, "not copyable")

// copyable refuses a plain root container: its root is the administrator's
// directory, not nixcell's.
func copyable(rec *state.Container) error {
	if rec.Source.RootFS == "" {
		return nil
	}
	return fmt.Errorf("%w: %s boots the plain root file system %s (--rootfs), which is yours, not nixcell's: copy that directory yourself and create a container of the copy", ErrNotCopyable, rec.Name, rec.Source.RootFS)
}

// shiftOf is how a container's files are owned: by its ID range, or by
// the host's IDs when it is privileged (Size 0).
func (m *Manager) shiftOf(rec *state.Container) (treecopy.Shift, error) {
	if rec.Spec.Privileged {
		return treecopy.Shift{}, nil
	}
	r, ok, err := m.IDs.Lookup(rec.Name)
	if err != nil {
		return treecopy.Shift{}, err
	}
	if !ok {
		return treecopy.Shift{}, fmt.Errorf("%s holds no ID range; destroy and create it again", rec.Name)
	}
	return treecopy.Shift{From: r.Start, To: r.Start, Size: r.Size}, nil
}

// ensureRoot makes the root of a container that never ran, empty, as its
// first start would (that start fills it in), so that it can be copied.
// Preconditions: the container's lock is held.
func (m *Manager) ensureRoot(rec *state.Container, shift treecopy.Shift) error {
	root := m.Store.RootFS(rec.Name)
	if _, err := os.Lstat(root); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	return os.Lchown(root, int(shift.From), int(shift.From))
}

// holdStill freezes a running container for a copy of its files and
// returns how to thaw it; a stopped one needs nothing. A container left
// frozen by a command that died is thawed first.
// Preconditions: the container's lock is held.
func (m *Manager) holdStill(name string, st lifecycle.State) (thaw func() error, err error) {
	if st != lifecycle.Running {
		return func() error { return nil }, nil
	}
	if _, err := runtime.ThawLeftover(m.Store.RuntimeRoot(), name); err != nil {
		return nil, err
	}
	f, err := runtime.Freeze(m.Store.RuntimeRoot(), name)
	if err != nil {
		return nil, fmt.Errorf("%w; it cannot be copied consistently while it runs", err)
	}
	fmt.Fprintf(m.Log, "%s is frozen while its files are copied\n", name)
	start := time.Now()
	return func() error {
		if err := f.Thaw(); err != nil {
			return err
		}
		fmt.Fprintf(m.Log, "%s thawed after %.1fs\n", name, time.Since(start).Seconds())
		return nil
	}, nil
}

// recoverLocked finishes what a command that died left of its work on the
// container: a container it left frozen is thawed, a restore it left half
// done is finished. Every command that changes a container calls it once
// it holds the lock.
func (m *Manager) recoverLocked(name string) error {
	if thawed, err := runtime.ThawLeftover(m.Store.RuntimeRoot(), name); err != nil {
		return err
	} else if thawed {
		m.warnf("%s was left frozen by an interrupted copy; thawed it", name)
	}
	if err := os.RemoveAll(m.exportAside(name)); err != nil {
		return fmt.Errorf("removing what an interrupted export left: %w", err)
	}
	return m.finishRestore(name)
}

// openTree opens one of a container's trees for reading: its parents are
// the host's, and it is opened without following a link.
func openTree(path string) (*os.File, error) {
	f, err := hostfs.Open(path, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return f, nil
}

// newTree makes the empty directory path, whose parent is the host's, for
// a copy, and opens it.
func newTree(path string) (*os.File, error) {
	if err := os.Mkdir(path, 0o700); err != nil {
		return nil, err
	}
	return openTree(path)
}

// copyTree copies the tree at from into a new directory to.
func copyTree(ctx context.Context, from, to string, shift treecopy.Shift, progress func(int64)) (treecopy.Stats, error) {
	dst, err := newTree(to)
	if err != nil {
		return treecopy.Stats{}, err
	}
	defer dst.Close()
	return copyTreeTo(ctx, from, dst, shift, progress)
}

// copyTreeTo copies the tree at from into the empty directory dst.
func copyTreeTo(ctx context.Context, from string, dst *os.File, shift treecopy.Shift, progress func(int64)) (treecopy.Stats, error) {
	src, err := openTree(from)
	if err != nil {
		return treecopy.Stats{}, err
	}
	defer src.Close()
	return treecopy.Copy(ctx, src, dst, treecopy.Options{Shift: shift, Progress: progress})
}

// newRootTree is newTree for a root of rec (its root, or a copy that
// becomes it): made with rec's disk quota when it has one, so that what is
// copied into it counts. Preconditions: rec holds its ID range.
func (m *Manager) newRootTree(rec *state.Container, path string) (*os.File, error) {
	if err := diskLimitAllowed(rec, rec.Limits().DiskBytes); err != nil {
		return nil, err
	}
	if rec.Limits().DiskBytes == 0 || rec.Spec.Privileged {
		return newTree(path)
	}
	if err := m.diskQuota(rec, path, rec.Limits().DiskBytes); err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o700); err != nil {
		return nil, err
	}
	return openTree(path)
}

// lockPair takes the locks of two containers in name order, so that two
// commands copying between the same containers cannot wait on each other.
// unlock deletes the lock file of a container that does not exist (a
// failed copy's), as unlockMissing does.
func (m *Manager) lockPair(ctx context.Context, a, b string) (unlock func(), err error) {
	names := []string{a, b}
	slices.Sort(names)
	held := map[string]*lockfile.Handle{}
	unlock = func() {
		for n, l := range held {
			m.unlockMissing(l, n)
		}
	}
	for _, n := range names {
		l, err := m.lock(ctx, n)
		if err != nil {
			unlock()
			return nil, err
		}
		held[n] = l
	}
	return unlock, nil
}

// claimName makes sure a new container may be made under name: none
// exists; what an interrupted create, clone or import left is removed; no
// other tool's Nix profile has that name.
// Preconditions: the name's lock is held.
func (m *Manager) claimName(ctx context.Context, name string) error {
	rec, err := m.Store.Load(name)
	switch {
	case err == nil && rec.Phase == state.Created:
		return fmt.Errorf("%w: %q (choose another name, or destroy it first)", state.ErrExists, name)
	case err == nil || dirExists(m.Store.Dir(name)):
		fmt.Fprintf(m.Log, "cleaning up an interrupted create of %s\n", name)
		if err := m.removeAll(ctx, rec, name); err != nil {
			return fmt.Errorf("cleaning up an interrupted create: %w", err)
		}
	case !errors.Is(err, state.ErrNotFound):
		return err
	default:
		if _, err := os.Lstat(nix.Profile{Name: name}.Dir()); err == nil {
			return fmt.Errorf("%w: a Nix profile already exists at %s (another tool's container of that name?); choose another name or remove it", state.ErrExists, nix.Profile{Name: name}.Dir())
		}
	}
	return nil
}

// copyInline gives a new container a copy of rec's inline configuration
// (create -c), so that its updates do not read another container's file.
func (m *Manager) copyInline(rec *state.Container, to string) (state.Source, error) {
	src := rec.Source
	if !src.Inline {
		return src, nil
	}
	data, err := os.ReadFile(m.Store.InlineConfig(rec.Name))
	if err != nil {
		return src, fmt.Errorf("reading the configuration of %s: %w", rec.Name, err)
	}
	src.ConfigFile = m.Store.InlineConfig(to)
	return src, os.WriteFile(src.ConfigFile, data, 0o644)
}

// validNames checks a source and a new name for a copy.
func validNames(src, dst string) error {
	if err := spec.ValidateName(src); err != nil {
		return err
	}
	if err := spec.ValidateName(dst); err != nil {
		return err
	}
	if src == dst {
		return fmt.Errorf("%w: the copy needs a name of its own", ErrBadRequest)
	}
	return nil
}

// gcRootsTree is a container's own GC roots and users' profiles, the tree
// below GCRootsDir that it writes.
func gcRootsTree(name string) string { return nix.Profile{Name: name}.GCRootsDir() }

// replaceTree swaps the directory fresh into the place of current
// atomically (renameat2 RENAME_EXCHANGE), so that one of the two is there
// at every moment; fresh then holds what was current.
func replaceTree(fresh, current string) error {
	err := unix.Renameat2(unix.AT_FDCWD, fresh, unix.AT_FDCWD, current, unix.RENAME_EXCHANGE)
	if err != nil {
		return fmt.Errorf("exchanging %s and %s: %w", filepath.Base(fresh), current, err)
	}
	return nil
}

// FormatBytes formats a size for people, in powers of 1024.
func FormatBytes(n int64) string { return treecopy.Bytes(n) }
