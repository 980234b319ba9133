package cell

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/treecopy"
	"github.com/nixcell/nixcell/internal/undo"
)

// Snapshots of a container, in its state directory, which only the host
// can reach:
//
//	STATE/containers/NAME/snapshots/TAG/snapshot.json  what it holds (SnapshotInfo)
//	STATE/containers/NAME/snapshots/TAG/root/          the root as it was, owned by the container's range
//	STATE/containers/NAME/snapshots/TAG/system         -> the generation's store path, a GC root
//	STATE/containers/NAME/snapshots/TAG.partial/       a snapshot being made or deleted
//	STATE/containers/NAME/restore.json                 a restore under way (restoreJournal)
//	STATE/containers/NAME/root.restoring/              the root it brings back, then the one it replaced
//
// A snapshot is made under a .partial name and renamed when complete, and
// deleted by the reverse, so a command killed meanwhile leaves only a
// .partial directory, which the next snapshot command of the container
// removes. Snapshots go with the container when it is destroyed.

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	Tag       string    `json:"tag"`
	CreatedAt time.Time `json:"createdAt"`
	// Generation and System are the generation that was current.
	Generation int    `json:"generation"`
	System     string `json:"system"`
	Files      int    `json:"files"`
	Bytes      int64  `json:"bytes"`
	// Cloned is the part of Bytes shared copy-on-write with the root
	// (reflinks): what the snapshot costs on disk is Bytes - Cloned.
	Cloned int64 `json:"cloned"`
}

const partialSuffix = ".partial"

// ErrNoSnapshot is the class of snapshots that do not exist.
var ErrNoSnapshot = fault.New(fault.NotFound, "no such snapshot")

// ErrSnapshotExists is the class of snapshot tags taken already.
var ErrSnapshotExists = fault.New(fault.Exists, "snapshot exists")

// tagShaped tells whether tag is 1 to 64 letters, digits, '.', '_' and
// '-', starting with a letter or digit. (A regular expression of it
// expands its repetition into a program compiled at every command's start,
// ≈ 0.3 ms.)
func tagShaped(tag string) bool {
	if len(tag) == 0 || len(tag) > 64 {
		return false
	}
	for i, r := range tag {
		alnum := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '_' && r != '-') {
			return false
		}
	}
	return true
}

func validTag(tag string) error {
	if !tagShaped(tag) || strings.HasSuffix(tag, partialSuffix) {
		return fmt.Errorf("%w: snapshot tag %q: use up to 64 letters, digits, '.', '_' and '-', starting with a letter or digit", ErrBadRequest, tag)
	}
	return nil
}

func (m *Manager) snapshotsDir(name string) string {
	return filepath.Join(m.Store.Dir(name), "snapshots")
}
func (m *Manager) snapshotDir(name, tag string) string {
	return filepath.Join(m.snapshotsDir(name), tag)
}

// Snapshot keeps the container's root and its current generation under
// tag (default snapN, the first N free). A running container is frozen
// while its root is copied. Its own GC roots and users' profiles are not
// part of it.
func (m *Manager) Snapshot(ctx context.Context, name, tag string, progress Progress) (info SnapshotInfo, retErr error) {
	rec, st, unlock, err := m.locked(ctx, name, lifecycle.Copy)
	if err != nil {
		return info, err
	}
	defer unlock()
	if err := copyable(rec); err != nil {
		return info, err
	}
	if err := m.removePartials(name); err != nil {
		return info, err
	}
	if tag == "" {
		if tag, err = m.freeTag(name); err != nil {
			return info, err
		}
	}
	if err := validTag(tag); err != nil {
		return info, err
	}
	dir := m.snapshotDir(name, tag)
	if _, err := os.Lstat(dir); err == nil {
		return info, fmt.Errorf("%w: %s has a snapshot %s already (delete-snapshot %s %s, or choose another tag)", ErrSnapshotExists, name, tag, name, tag)
	}
	shift, err := m.shiftOf(rec)
	if err != nil {
		return info, err
	}
	if err := m.ensureRoot(rec, shift); err != nil {
		return info, err
	}
	info = SnapshotInfo{Tag: tag, CreatedAt: time.Now().UTC()}
	if info.Generation, info.System, err = (nix.Profile{Name: name}).Current(); err != nil {
		return info, err
	}
	if err := os.Mkdir(m.snapshotsDir(name), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return info, err
	}
	partial := dir + partialSuffix
	if err := os.Mkdir(partial, 0o700); err != nil {
		return info, err
	}
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	u.Push("removing the partial snapshot", func(context.Context) error { return os.RemoveAll(partial) })

	thaw, err := m.holdStill(name, st)
	if err != nil {
		return info, err
	}
	copied, err := copyTree(ctx, m.Store.RootFS(name), filepath.Join(partial, "root"), treecopy.Shift{}, progress.of("copying"))
	if terr := thaw(); terr != nil && err == nil {
		err = terr
	}
	if err != nil {
		return info, fmt.Errorf("copying the root of %s: %w", name, err)
	}
	info.Files, info.Bytes, info.Cloned = copied.Files+copied.Hardlinks, copied.Bytes, copied.Cloned
	if err := failpoint.Hit("snapshot/copied"); err != nil {
		return info, err
	}
	if err := nix.AddRoot(ctx, info.System, filepath.Join(partial, "system")); err != nil {
		return info, fmt.Errorf("keeping %s from the garbage collector: %w", info.System, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(partial, "snapshot.json"), info, 0o600); err != nil {
		return info, err
	}
	if err := os.Rename(partial, dir); err != nil {
		return info, err
	}
	return info, nil
}

// freeTag is the first snapN tag not taken.
func (m *Manager) freeTag(name string) (string, error) {
	snaps, err := m.snapshots(name)
	if err != nil {
		return "", err
	}
	taken := map[string]bool{}
	for _, s := range snaps {
		taken[s.Tag] = true
	}
	for i := 0; ; i++ {
		if tag := "snap" + strconv.Itoa(i); !taken[tag] {
			return tag, nil
		}
	}
}

// removePartials removes what interrupted snapshot commands left.
// Preconditions: the container's lock is held.
func (m *Manager) removePartials(name string) error {
	entries, err := os.ReadDir(m.snapshotsDir(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), partialSuffix) {
			if err := os.RemoveAll(filepath.Join(m.snapshotsDir(name), e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// ListSnapshots reports the container's snapshots, oldest first.
func (m *Manager) ListSnapshots(name string) ([]SnapshotInfo, error) {
	if _, err := m.Store.Load(name); err != nil {
		return nil, err
	}
	return m.snapshots(name)
}

func (m *Manager) snapshots(name string) ([]SnapshotInfo, error) {
	entries, err := os.ReadDir(m.snapshotsDir(name))
	if errors.Is(err, fs.ErrNotExist) {
		return []SnapshotInfo{}, nil
	}
	if err != nil {
		return nil, err
	}
	infos := []SnapshotInfo{}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), partialSuffix) {
			continue
		}
		info, err := m.snapshotInfo(name, e.Name())
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].CreatedAt.Before(infos[j].CreatedAt) })
	return infos, nil
}

func (m *Manager) snapshotInfo(name, tag string) (SnapshotInfo, error) {
	var info SnapshotInfo
	if err := validTag(tag); err != nil {
		return info, err
	}
	err := atomicfile.ReadJSON(filepath.Join(m.snapshotDir(name, tag), "snapshot.json"), &info)
	if errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("%w: %s has no snapshot %s (nixcell list-snapshots %s)", ErrNoSnapshot, name, tag, name)
	}
	if err != nil {
		return info, fmt.Errorf("reading snapshot %s of %s: %w", tag, name, err)
	}
	return info, nil
}

// DeleteSnapshot deletes a snapshot; its generation may then be collected
// as garbage, unless the profile still has it.
func (m *Manager) DeleteSnapshot(ctx context.Context, name, tag string) error {
	_, _, unlock, err := m.locked(ctx, name, lifecycle.Copy)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := m.snapshotInfo(name, tag); err != nil {
		return err
	}
	gone := m.snapshotDir(name, tag) + partialSuffix
	if err := os.Rename(m.snapshotDir(name, tag), gone); err != nil {
		return err
	}
	if err := failpoint.Hit("delete-snapshot/renamed"); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// RestoreResult reports a restore.
type RestoreResult struct {
	Tag string `json:"tag"`
	// Generation is the profile's current generation after the restore:
	// a new one with the snapshot's system, unless that was current.
	Generation int    `json:"generation"`
	System     string `json:"system"`
	New        bool   `json:"new"`
	// Restarted: it ran, so it was stopped for the restore and started
	// again.
	Restarted bool          `json:"restarted"`
	Copied    CopyStats     `json:"copied"`
	Took      time.Duration `json:"took"`
}

// restoreJournal records a restore under way, so that a restore that was
// killed is finished by the next command on the container
// (finishRestore).
type restoreJournal struct {
	Tag    string `json:"tag"`
	System string `json:"system"`
	// Switching is false while the snapshot's root is copied (nothing has
	// changed yet: the copy is thrown away) and true once it is complete
	// (the restore goes on to its end); RootIno and RootDev identify the
	// copy (a root with a btrfs quota is a subvolume, whose inode number
	// is always 256, but whose device is its own).
	Switching bool   `json:"switching"`
	RootIno   uint64 `json:"rootIno,omitempty"`
	RootDev   uint64 `json:"rootDev,omitempty"`
}

func (m *Manager) journalPath(name string) string {
	return filepath.Join(m.Store.Dir(name), "restore.json")
}
func (m *Manager) restoringRoot(name string) string {
	return filepath.Join(m.Store.Dir(name), "root.restoring")
}

// Restore brings back the root and the generation of a snapshot: the
// snapshot's root replaces the container's (atomically: the container has
// one or the other at every moment) and its generation becomes current, as
// a new generation of the profile unless it is current already. A running
// container is stopped first and started again after. A failure undoes
// what was done; a restore that is killed is finished by the next command
// on the container (or, killed while copying, forgotten).
func (m *Manager) Restore(ctx context.Context, name, tag string, progress Progress) (res RestoreResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	res.Tag = tag
	rec, st, unlock, err := m.locked(ctx, name, lifecycle.Restore)
	if err != nil {
		return res, err
	}
	defer unlock()
	if err := copyable(rec); err != nil {
		return res, err
	}
	info, err := m.snapshotInfo(name, tag)
	if err != nil {
		return res, err
	}
	if err := nix.CheckSystem(info.System); err != nil {
		return res, fmt.Errorf("snapshot %s: its generation is gone from the store: %w", tag, err)
	}
	if st == lifecycle.Running {
		fmt.Fprintf(m.Log, "stopping %s to restore snapshot %s\n", name, tag)
		if _, err := runtime.Stop(m.Store.RuntimeRoot(), name, DefaultStopTimeout); err != nil {
			return res, err
		}
		if err := m.netStop(ctx, name, false); err != nil {
			return res, err
		}
		res.Restarted = true
	}
	err = failpoint.Hit("restore/stopped")
	if err == nil {
		err = m.restoreLocked(ctx, rec, info, progress, &res)
	}
	if err != nil {
		if res.Restarted {
			if _, serr := m.startLocked(ctx, rec, startRequest{}); serr != nil {
				m.warnf("starting %s again: %v", name, serr)
			}
		}
		return res, err
	}
	if res.Restarted {
		if _, err := m.startLocked(ctx, rec, startRequest{}); err != nil {
			return res, fmt.Errorf("the snapshot is restored, but starting %s again failed: %w", name, err)
		}
	}
	return res, nil
}

// restoreLocked replaces the stopped container's root and generation by
// the snapshot's. Preconditions: the lock is held; it does not run.
func (m *Manager) restoreLocked(ctx context.Context, rec *state.Container, info SnapshotInfo, progress Progress, res *RestoreResult) (retErr error) {
	name := rec.Name
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	journal := restoreJournal{Tag: info.Tag, System: info.System}
	if err := atomicfile.WriteJSON(m.journalPath(name), journal, 0o600); err != nil {
		return err
	}
	u.Push("forgetting the restore", func(context.Context) error { return os.Remove(m.journalPath(name)) })
	fresh := m.restoringRoot(name)
	if err := os.RemoveAll(fresh); err != nil {
		return err
	}
	u.Push("removing the copy of the snapshot", func(context.Context) error { return os.RemoveAll(fresh) })
	dst, err := m.newRootTree(rec, fresh)
	if err != nil {
		return err
	}
	defer dst.Close()
	copied, err := copyTreeTo(ctx, filepath.Join(m.snapshotDir(name, info.Tag), "root"), dst, treecopy.Shift{}, progress.of("copying"))
	res.Copied = copyStatsOf(copied)
	if err != nil {
		return fmt.Errorf("copying snapshot %s: %w", info.Tag, err)
	}
	if err := failpoint.Hit("restore/copied"); err != nil {
		return err
	}
	var fi unix.Stat_t
	if err := unix.Lstat(fresh, &fi); err != nil {
		return err
	}
	journal.Switching, journal.RootIno, journal.RootDev = true, fi.Ino, fi.Dev
	if err := atomicfile.WriteJSON(m.journalPath(name), journal, 0o600); err != nil {
		return err
	}
	// From here on a killed restore is finished, not forgotten.
	profile := nix.Profile{Name: name}
	prev, current, err := profile.Current()
	if err != nil {
		return err
	}
	res.Generation, res.System = prev, info.System
	if current != info.System {
		if res.Generation, err = profile.Set(ctx, info.System); err != nil {
			return fmt.Errorf("adding the snapshot's generation to %s: %w", profile.System(), err)
		}
		res.New = true
		gen := res.Generation
		u.Push(fmt.Sprintf("deleting generation %d", gen), func(ctx context.Context) error {
			return forgetGeneration(ctx, profile, gen, prev)
		})
	}
	if err := failpoint.Hit("restore/generation"); err != nil {
		return err
	}
	if err := replaceTree(fresh, m.Store.RootFS(name)); err != nil {
		return err
	}
	u.Push("putting the root back", func(context.Context) error { return replaceTree(fresh, m.Store.RootFS(name)) })
	if err := failpoint.Hit("restore/exchanged"); err != nil {
		return err
	}
	// The old root is in fresh now; it goes with the journal.
	u.Release()
	return m.endRestore(name)
}

// endRestore removes the replaced root, then the journal.
func (m *Manager) endRestore(name string) error {
	if err := os.RemoveAll(m.restoringRoot(name)); err != nil {
		return fmt.Errorf("removing the replaced root: %w", err)
	}
	return os.Remove(m.journalPath(name))
}

// finishRestore finishes a restore that was killed: one killed while it
// copied is forgotten (nothing had changed); one killed later is brought
// to its end: the snapshot's generation made current and its root put in
// place, whichever of the two was not done yet.
// Preconditions: the container's lock is held; it does not run (a
// restore stops it before it writes its journal, and only a command that
// takes the lock starts it).
func (m *Manager) finishRestore(name string) error {
	var j restoreJournal
	err := atomicfile.ReadJSON(m.journalPath(name), &j)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the journal of an interrupted restore: %w", err)
	}
	if st, err := runtime.Inspect(m.Store.RuntimeRoot(), name); err != nil || st.Running {
		return fmt.Errorf("a restore of snapshot %s of %s was interrupted, and it runs (started by another tool?): stop it, then run restore %s %s again", j.Tag, name, name, j.Tag)
	}
	if !j.Switching {
		fmt.Fprintf(m.Log, "forgetting an interrupted restore of snapshot %s of %s\n", j.Tag, name)
		if err := os.RemoveAll(m.restoringRoot(name)); err != nil {
			return err
		}
		return os.Remove(m.journalPath(name))
	}
	fmt.Fprintf(m.Log, "finishing an interrupted restore of snapshot %s of %s\n", j.Tag, name)
	profile := nix.Profile{Name: name}
	if _, current, err := profile.Current(); err != nil {
		return err
	} else if current != j.System {
		if _, err := profile.Set(context.Background(), j.System); err != nil {
			return fmt.Errorf("finishing the restore of snapshot %s: %w", j.Tag, err)
		}
	}
	var fi unix.Stat_t
	if err := unix.Lstat(m.restoringRoot(name), &fi); err == nil && fi.Ino == j.RootIno && (j.RootDev == 0 || fi.Dev == j.RootDev) {
		if err := replaceTree(m.restoringRoot(name), m.Store.RootFS(name)); err != nil {
			return fmt.Errorf("finishing the restore of snapshot %s: %w", j.Tag, err)
		}
	}
	return m.endRestore(name)
}
