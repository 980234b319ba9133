package cell

import (
	"errors"
	"fmt"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
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
