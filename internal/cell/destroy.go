package cell

import (
	"context"
	"errors"
	"time"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/state"
	"golang.org/x/sys/unix"
)

// Destroy removes everything of the container: it stops it if it runs (a
// clean stop, killed after timeout), then removes its runtime state, root,
// addresses, profile, GC roots, ID range and record, and last its lock
// file. It also finishes off a container whose create or destroy was
// interrupted.
func (m *Manager) Destroy(ctx context.Context, name string, timeout time.Duration) error {
	lock, err := m.lock(ctx, name)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	rec, err := m.Store.Load(name)
	if err != nil && !(errors.Is(err, state.ErrNotFound) && dirExists(m.Store.Dir(name))) {
		m.unlockMissing(lock, name)
		return err
	}
	if rec != nil && rec.Phase == state.Created {
		st, _, err := m.stateOf(rec)
		if err != nil {
			return err
		}
		if err := lifecycle.Check(st, lifecycle.Destroy); err != nil {
			return err
		}
		if st == lifecycle.Running {
			if _, err := runtime.Stop(m.Store.RuntimeRoot(), name, timeout); err != nil {
				return err
			}
		}
	}
	if err := m.removeAll(ctx, rec, name); err != nil {
		return err
	}
	defer m.tidyRun(ctx)
	if rec != nil && rec.Spec.Autostart {
		m.autostartUnit(ctx, name, false)
	}
	return lock.Remove()
}

// removeAll deletes every trace of the container but its lock. rec is its
// record (nil when it has none). Each step is idempotent and the record
// goes last, marked destroying first, so a destroy killed midway is
// finished by the next one. The root goes early, so that a full file
// system has space again for what follows.
func (m *Manager) removeAll(ctx context.Context, rec *state.Container, name string) error {
	steps := []struct {
		name string
		do   func() error
	}{
		{"destroy/runtime", func() error { return runtime.Cleanup(m.place(name)) }},
		{"destroy/marked", func() error { return m.markDestroying(rec, name) }},
		{"destroy/host-dir", func() error { return runtime.RemoveHostDir(m.Store.HostDir(name)) }},
		{"destroy/root", func() error { return m.Store.RemoveRoot(name) }},
		{"destroy/network", func() error { return m.releaseAddresses(ctx, name) }},
		{"destroy/profile", func() error { return nix.Profile{Name: name}.Remove() }},
		{"destroy/ids", func() error {
			// Cleanup must finish even after the user interrupted the command.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			return m.IDs.Release(ctx, name)
		}},
		{"destroy/state", func() error { return m.Store.Remove(name) }},
	}
	for _, s := range steps {
		if err := failpoint.Hit(s.name); err != nil {
			return err
		}
		if err := s.do(); err != nil {
			return err
		}
	}
	return nil
}

// markDestroying records that a destroy began, unless the record is gone.
// On a full file system the root goes first to make room for the record.
func (m *Manager) markDestroying(rec *state.Container, name string) error {
	if rec == nil || rec.Phase == state.Destroying {
		return nil
	}
	marked := *rec
	marked.Phase = state.Destroying
	err := m.Store.Save(&marked)
	if errors.Is(err, unix.ENOSPC) {
		if rerr := m.Store.RemoveRoot(name); rerr != nil {
			return errors.Join(err, rerr)
		}
		err = m.Store.Save(&marked)
	}
	return err
}
