package cell

import (
	"errors"
	"fmt"
	"os"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/quota"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

func runtimeLimits(l spec.Limits) runtime.Limits {
	return runtime.Limits{MemoryBytes: l.MemoryBytes, CPUs: l.CPUs, Pids: l.Pids}
}

// setLimitsLocked applies limits to the running container without
// restarting it.
// Preconditions: the container's lock is held and it runs.
func (m *Manager) setLimitsLocked(name string, l spec.Limits) error {
	if err := runtime.SetLimits(m.Store.RuntimeRoot(), name, runtimeLimits(l)); err != nil {
		return fmt.Errorf("applying limits (%s) to %s: %w", l, name, err)
	}
	return nil
}

// Stats reads the running container's resource use. It takes no lock: it
// changes nothing.
func (m *Manager) Stats(name string) (Stats, error) {
	if err := spec.ValidateName(name); err != nil {
		return Stats{}, err
	}
	rec, err := m.Store.Load(name)
	if err != nil {
		return Stats{}, err
	}
	st, _, err := m.stateOf(rec)
	if err != nil {
		return Stats{}, err
	}
	if err := lifecycle.Check(st, lifecycle.Stats); err != nil {
		return Stats{}, err
	}
	s, err := runtime.ReadStats(m.Store.RuntimeRoot(), name)
	if errors.Is(err, lifecycle.ErrNotRunning) {
		return Stats{}, lifecycle.Check(lifecycle.Stopped, lifecycle.Stats)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("reading the statistics of %s: %w", name, err)
	}
	return statsOf(name, s), nil
}

// setDiskLimit gives the container's root the disk limit bytes
// (limits.disk; 0: none): a quota of the state file system, whose
// project ID (ext4, XFS) is the start of the container's ID range, unique
// on the host. A root with a limit is made now, where the file system
// needs it made so (a btrfs subvolume). Preconditions: the container's
// lock is held and it holds its ID range.
func (m *Manager) setDiskLimit(rec *state.Container, bytes uint64) error {
	if err := diskLimitAllowed(rec, bytes); err != nil {
		return err
	}
	if rec.Spec.Privileged || rec.Source.RootFS != "" {
		return nil
	}
	return m.diskQuota(rec, m.Store.RootFS(rec.Name), bytes)
}

// diskLimitAllowed refuses a disk limit where nixcell cannot set one.
func diskLimitAllowed(rec *state.Container, bytes uint64) error {
	if bytes > 0 && rec.Spec.Privileged {
		return fmt.Errorf("%w: limits.disk of %s: a privileged container has no ID range, whose start would be its quota's project ID; drop limits.disk or privileged", spec.ErrInvalidSpec, rec.Name)
	}
	if bytes > 0 && rec.Source.RootFS != "" {
		return fmt.Errorf("%w: limits.disk of %s: its root is the directory %s, not one of nixcell's; drop limits.disk, or give that directory a quota of its file system's own", spec.ErrInvalidSpec, rec.Name, rec.Source.RootFS)
	}
	return nil
}

// diskQuota gives the root of rec at root (its own, or a copy that becomes
// it) the disk limit bytes, making it when it has a limit and does not
// exist. Preconditions: as setDiskLimit's, and rec is neither privileged
// nor a plain root's.
func (m *Manager) diskQuota(rec *state.Container, root string, bytes uint64) error {
	r, ok, err := m.IDs.Lookup(rec.Name)
	if err != nil {
		return err
	}
	if !ok && bytes == 0 {
		return nil // a destroy that released it: nothing names the quota
	}
	if !ok {
		return fmt.Errorf("limits.disk of %s: it holds no ID range; destroy and create it again", rec.Name)
	}
	if bytes > 0 {
		if err := quota.MakeRoot(root); err != nil {
			return fmt.Errorf("making the root of %s: %w", rec.Name, err)
		}
	} else if _, err := os.Lstat(root); err != nil {
		return nil // no root, no quota
	}
	if err := quota.Set(root, r.Start, bytes); err != nil {
		return fmt.Errorf("limits.disk of %s: %w", rec.Name, err)
	}
	return nil
}

// clearDiskLimit removes the container's quota before its root goes (a
// project's limit outlives its files). Preconditions: the container's
// lock is held and it does not run.
func (m *Manager) clearDiskLimit(rec *state.Container) error {
	if rec == nil || rec.Limits().DiskBytes == 0 || rec.Spec.Privileged || rec.Source.RootFS != "" {
		return nil
	}
	r, ok, err := m.IDs.Lookup(rec.Name)
	if err != nil || !ok {
		return err
	}
	if err := quota.Clear(m.Store.RootFS(rec.Name), r.Start); err != nil {
		return fmt.Errorf("removing the disk quota of %s: %w", rec.Name, err)
	}
	return nil
}
