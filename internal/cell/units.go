package cell

import (
	"context"
	"fmt"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/systemd"
)

// Reload switches the running container to its profile's current
// generation in place, as nixos-container's reload does (systemctl reload
// nixcell@NAME runs it): the generation's switch-to-configuration runs
// inside even when the container runs it already, re-activating it.
func (m *Manager) Reload(ctx context.Context, name string) (ChangeResult, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Reload)
	if err != nil {
		return ChangeResult{}, err
	}
	defer unlock()
	if err := noGenerations(rec); err != nil {
		return ChangeResult{}, err
	}
	gen, system, err := nix.Profile{Name: name}.Current()
	if err != nil {
		return ChangeResult{}, err
	}
	if err := m.switchInPlace(name, system); err != nil {
		return ChangeResult{}, err
	}
	if err := m.recordSwitch(ctx, name, gen, system); err != nil {
		return ChangeResult{}, err
	}
	return ChangeResult{Generation: gen, Previous: gen, System: system, Applied: AppliedSwitched}, nil
}

// autostartUnit makes the container's unit enabled exactly when its
// configuration says autostart = true, on a systemd host whose units
// nixcell installed (install-units): there, enablement is autostart. Only
// the default instance has units.
func (m *Manager) autostartUnit(ctx context.Context, name string, autostart bool) {
	if m.Store.ID != "" || !systemd.UnitsInstalled() {
		return
	}
	if err := systemd.SetEnabled(ctx, name, autostart); err != nil {
		m.warnf("%s: autostart: %v", name, err)
	}
}

// InstallUnits installs the nixcell@.service template for the nixcell
// binary at bin, and enables the units of the containers with autostart
// = true.
func (m *Manager) InstallUnits(ctx context.Context, bin string) (string, error) {
	if m.Store.ID != "" {
		return "", fmt.Errorf("%w: units run the default instance (/var/lib/nixcell), not %s", ErrBadRequest, m.Store.Root)
	}
	path, err := systemd.InstallUnits(ctx, systemd.UnitDir, bin)
	if err != nil {
		return "", err
	}
	names, err := m.Store.Names()
	if err != nil {
		return path, err
	}
	for _, n := range names {
		if rec, err := m.Store.Load(n); err == nil && rec.Spec.Autostart {
			m.autostartUnit(ctx, n, true)
		}
	}
	return path, nil
}
