package cell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/undo"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

// UpdateRequest says how to build a container's next generation. At most
// one of ConfigFile, Expr, Flake and SystemPath is set, except that
// SystemPath may come with a ConfigFile or Expr of host-side settings; none
// rebuilds from the source recorded at the last create or update.
type UpdateRequest struct {
	Name       string
	ConfigFile string
	Expr       string
	Flake      string // "REF#NAME" or "REF"
	SystemPath string
	// NixArgs replace the recorded Nix arguments when SetNixArgs is true.
	NixArgs    []string
	SetNixArgs bool
	// Restart reboots a running container into the new generation instead
	// of switching it in place.
	Restart bool
	// Limits replace the configuration's limits from now on (--memory,
	// --cpus, --pids), on top of those given before.
	Limits spec.LimitOverrides
}

// Applied says what became of a generation.
type Applied string

const (
	// AppliedNextStart: the container is stopped and boots it next time.
	AppliedNextStart Applied = "next-start"
	// AppliedSwitched: switched in place with switch-to-configuration.
	AppliedSwitched Applied = "switched"
	// AppliedRestarted: the container was rebooted into it.
	AppliedRestarted Applied = "restarted"
	// AppliedNothing: it was already current and running.
	AppliedNothing Applied = "unchanged"
)

// ChangeResult reports an update, switch or rollback.
type ChangeResult struct {
	Generation int           `json:"generation"`
	Previous   int           `json:"previous"`
	System     string        `json:"system"`
	New        bool          `json:"new"` // a new generation was made
	Applied    Applied       `json:"applied"`
	Took       time.Duration `json:"took"`
	// Limits are the new limits when an update changed them (applied at
	// once to a running container), nil otherwise.
	Limits *spec.Limits `json:"limits,omitempty"`
}

// Update builds the container's next generation and applies it: a stopped
// container boots it next time; a running one is switched in place (or
// restarted). Unchanged configuration makes no new generation. A plain
// root container (create --rootfs) has no generations: only its host-side
// settings change, limits at once, the rest at its next start (or now,
// with Restart). On any failure the container stays as it was: each
// finished step (the inline configuration written, the addresses and
// ports claimed, the limits set, the generation added) is undone; a failed
// switch switches the previous generation back in.
func (m *Manager) Update(ctx context.Context, req UpdateRequest) (res ChangeResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	rec, st, unlock, err := m.locked(ctx, req.Name, lifecycle.Update)
	if err != nil {
		return res, err
	}
	defer unlock()
	plain := rec.Source.RootFS != ""
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)

	src, err := m.updatedSource(rec, req)
	if err != nil {
		return res, err
	}
	next := *rec
	next.Source = src
	next.LimitOverrides = rec.LimitOverrides.Merge(req.Limits)
	inline := m.Store.InlineConfig(rec.Name)
	if req.Expr != "" {
		// Build from a new file; it replaces the recorded one only when the
		// update succeeds.
		next.Source.ConfigFile = inline + ".new"
		if err := atomicfile.WriteFile(next.Source.ConfigFile, []byte(req.Expr+"\n"), 0o644); err != nil {
			return res, err
		}
		defer os.Remove(next.Source.ConfigFile)
	}
	if next.Source.ConfigFile != "" {
		if next.Spec, err = m.settings(ctx, &next); err != nil {
			return res, err
		}
		if next.Spec.Privileged != rec.Spec.Privileged {
			return res, fmt.Errorf("%w: privileged cannot change after create: the root file system belongs to the container's ID range; destroy and create it again", spec.ErrInvalidSpec)
		}
		next.Spec.Privileged = rec.Spec.Privileged
		if err := checkPlainRootSpec(&next); err != nil {
			return res, err
		}
		m.warnExposures(&next)
	}
	if err := failpoint.Hit("update/evaluated"); err != nil {
		return res, err
	}
	if err := m.allocateAddresses(ctx, &next); err != nil {
		return res, err
	}
	u.Push("giving back the addresses and ports it claimed", func(ctx context.Context) error {
		return m.allocateAddresses(ctx, rec)
	})
	if err := failpoint.Hit("update/addresses"); err != nil {
		return res, err
	}
	if changed := changedAtStart(rec.Spec, next.Spec); st == lifecycle.Running && !req.Restart && changed != "" {
		m.warnf("the %s settings of %s changed; they apply when it restarts (update --restart)", changed, rec.Name)
	}

	system := next.Source.SystemPath
	if system == "" && !plain {
		if system, err = m.build(ctx, &next); err != nil {
			return res, err
		}
		defer os.Remove(m.Store.BuildLink(rec.Name))
	}
	if err := failpoint.Hit("update/built"); err != nil {
		return res, err
	}
	if limits := next.Limits(); limits != rec.Limits() {
		res.Limits = &limits
	}
	if st == lifecycle.Running {
		// Limits apply at once, before the switch: if the kernel refuses
		// them, nothing has changed yet. Set even when unchanged, so the
		// kernel's agree with the record.
		if err := m.setLimitsLocked(rec.Name, next.Limits()); err != nil {
			return res, err
		}
		u.Push("restoring the previous limits", func(context.Context) error {
			err := m.setLimitsLocked(rec.Name, rec.Limits())
			if errors.Is(err, lifecycle.ErrNotRunning) {
				return nil
			}
			return err
		})
	}
	if disk := next.Limits().DiskBytes; disk != rec.Limits().DiskBytes {
		if err := m.setDiskLimit(&next, disk); err != nil {
			return res, err
		}
		u.Push("restoring the previous disk limit", func(context.Context) error {
			return m.setDiskLimit(rec, rec.Limits().DiskBytes)
		})
	}
	if err := failpoint.Hit("update/limits"); err != nil {
		return res, err
	}
	if plain {
		if res.Applied, err = m.applySettingsLocked(ctx, &next, st, req.Restart); err != nil {
			return res, err
		}
		return res, m.saveUpdated(ctx, rec, &next, req)
	}
	profile := nix.Profile{Name: rec.Name}
	var current string
	if res.Previous, current, err = profile.Current(); err != nil {
		return res, err
	}
	res.Generation, res.System = res.Previous, system
	if system != current {
		if res.Generation, err = profile.Set(ctx, system); err != nil {
			return res, fmt.Errorf("adding the generation to %s: %w", profile.System(), err)
		}
		res.New = true
		gen, previous := res.Generation, res.Previous
		u.Push(fmt.Sprintf("deleting generation %d", gen), func(ctx context.Context) error {
			return forgetGeneration(ctx, profile, gen, previous)
		})
	}
	if err := failpoint.Hit("update/generation"); err != nil {
		return res, err
	}
	if res.Applied, err = m.applyLocked(ctx, &next, st, req.Restart); err != nil {
		return res, err
	}
	return res, m.saveUpdated(ctx, rec, &next, req)
}

// saveUpdated records the container as an update left it: an inline
// configuration it was given replaces the recorded one, and the host's
// autostart follows the new setting.
func (m *Manager) saveUpdated(ctx context.Context, rec, next *state.Container, req UpdateRequest) error {
	if req.Expr != "" {
		inline := m.Store.InlineConfig(next.Name)
		if err := os.Rename(next.Source.ConfigFile, inline); err != nil {
			return err
		}
		next.Source.ConfigFile = inline
	}
	if err := m.Store.Save(next); err != nil {
		return err
	}
	if next.Spec.Autostart != rec.Spec.Autostart {
		m.autostartUnit(ctx, rec.Name, next.Spec.Autostart)
	}
	return nil
}

// changedAtStart names the settings that differ between a and b and take
// effect only when the container starts ("" when none does); limits are
// not among them, since update applies them at once.
func changedAtStart(a, b spec.Spec) string {
	var changed []string
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"network", a.Network, b.Network}, {"bindMounts", a.BindMounts, b.BindMounts}, {"tmpfs", a.Tmpfs, b.Tmpfs},
		{"ephemeral", a.Ephemeral, b.Ephemeral}, {"store", a.Store, b.Store}, {"allowedDevices", a.AllowedDevices, b.AllowedDevices},
		{"initArgs", a.InitArgs, b.InitArgs}, {"consoleLogSize", a.ConsoleLogSize, b.ConsoleLogSize},
	} {
		if !reflect.DeepEqual(s.a, s.b) {
			changed = append(changed, s.name)
		}
	}
	return strings.Join(changed, ", ")
}

// applySettingsLocked brings a plain root container in state st to its
// new settings: a stopped one gets them at its next start; a running one
// has its limits already, and is restarted when restart is set.
// Preconditions: the lock is held.
func (m *Manager) applySettingsLocked(ctx context.Context, rec *state.Container, st lifecycle.State, restart bool) (Applied, error) {
	switch {
	case st != lifecycle.Running:
		return AppliedNextStart, nil
	case restart:
		return AppliedRestarted, m.restartLocked(ctx, rec, lifecycle.Running, DefaultStopTimeout)
	}
	return AppliedNothing, nil
}

// updatedSource is the source an update builds from.
func (m *Manager) updatedSource(rec *state.Container, req UpdateRequest) (state.Source, error) {
	n := 0
	for _, s := range []string{req.ConfigFile, req.Expr, req.Flake, req.SystemPath} {
		if s != "" {
			n++
		}
	}
	withSettings := req.SystemPath != "" && req.Flake == "" && n == 2
	if n > 1 && !withSettings {
		return state.Source{}, fmt.Errorf("%w: give at most one of a configuration file, -c EXPR, --flake REF or --system PATH (--system may come with a settings file or -c EXPR)", ErrBadRequest)
	}
	src := rec.Source
	var err error
	if rec.Source.RootFS != "" {
		// A plain root's system is its directory: only the file of its
		// host-side settings can change.
		if req.Flake != "" || req.SystemPath != "" {
			return src, noGenerations(rec)
		}
		switch {
		case req.ConfigFile != "":
			src.Inline = false
			if src.ConfigFile, err = absConfigPath(req.ConfigFile); err != nil {
				return src, err
			}
		case req.Expr != "":
			src.Inline = true
		case src.Inline:
			src.ConfigFile = m.Store.InlineConfig(rec.Name)
		}
		if req.SetNixArgs {
			src.NixArgs = req.NixArgs
		}
		return src, nil
	}
	switch {
	case withSettings:
		if err := nix.CheckSystem(req.SystemPath); err != nil {
			return src, err
		}
		src = state.Source{SystemPath: req.SystemPath, Inline: req.Expr != ""}
		if req.ConfigFile != "" {
			if src.ConfigFile, err = absConfigPath(req.ConfigFile); err != nil {
				return src, err
			}
		}
	case req.ConfigFile != "":
		src = state.Source{ConfigFile: req.ConfigFile}
		if src.ConfigFile, err = absConfigPath(req.ConfigFile); err != nil {
			return src, err
		}
	case req.Expr != "":
		src = state.Source{Inline: true}
	case req.Flake != "":
		src = state.Source{}
		if src.Flake, err = nix.FlakeRef(req.Flake, rec.Name); err != nil {
			return src, err
		}
	case req.SystemPath != "":
		src = state.Source{SystemPath: req.SystemPath}
		if err := nix.CheckSystem(req.SystemPath); err != nil {
			return src, err
		}
	default:
		if src.Inline {
			src.ConfigFile = m.Store.InlineConfig(rec.Name)
		}
	}
	src.NixArgs = rec.Source.NixArgs
	if req.SetNixArgs {
		src.NixArgs = req.NixArgs
	}
	return src, nil
}

// forgetGeneration takes back a new generation: the previous one becomes
// current again and the new one is deleted.
func forgetGeneration(ctx context.Context, profile nix.Profile, gen, previous int) error {
	if err := profile.SwitchTo(ctx, previous); err != nil {
		return fmt.Errorf("switching the profile back: %w", err)
	}
	return profile.Delete(ctx, []int{gen})
}

// applyLocked brings a container in state st to the profile's current
// generation. A stopped container needs nothing. A running one is
// restarted, or switched in place; if the switch fails, the generation it
// ran before is switched back in and the error returned.
// Preconditions: the lock is held; the profile's current generation is the
// one to apply.
func (m *Manager) applyLocked(ctx context.Context, rec *state.Container, st lifecycle.State, restart bool) (Applied, error) {
	if st != lifecycle.Running {
		m.prepareStore(rec)
		return AppliedNextStart, nil
	}
	gen, system, err := nix.Profile{Name: rec.Name}.Current()
	if err != nil {
		return "", err
	}
	status, err := runtime.Inspect(m.Store.RuntimeRoot(), rec.Name)
	if err != nil {
		return "", err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return "", err
	}
	was, known := runOf(runs, rec.Name, status)
	if known && was.System == system && was.Switching == "" {
		// A switch killed while it recorded itself, before the rename,
		// leaves the table right but its half-written copy beside it;
		// nothing else of this command would write the table and take
		// that copy away.
		if m.instanceLeftovers() {
			return AppliedNothing, m.changeRuns(ctx, func(state.Runs) error { return nil })
		}
		return AppliedNothing, nil
	}
	if rec.Spec.Store == "closure" && !restart {
		// The new system's store paths are not in the view the container
		// booted with.
		fmt.Fprintf(m.Log, "restarting %s into generation %d: it sees only the store closure it booted, so it cannot switch in place\n", rec.Name, gen)
		restart = true
	}
	if restart {
		return AppliedRestarted, m.restartLocked(ctx, rec, lifecycle.Running, DefaultStopTimeout)
	}
	fmt.Fprintf(m.Log, "switching %s to generation %d in place\n", rec.Name, gen)
	// Said before the switch: a command killed during it leaves the run
	// table saying that the init may run either system, and the next
	// apply switches again instead of trusting System.
	if err := m.changeRuns(ctx, func(runs state.Runs) error {
		if r, ok := runs[rec.Name]; ok {
			r.Switching = system
			runs[rec.Name] = r
		}
		return nil
	}); err != nil {
		return "", err
	}
	if err := m.switchInPlace(rec.Name, system); err != nil {
		back := "the generation it ran"
		if known && was.System != "" {
			back = fmt.Sprintf("generation %d", was.Generation)
			if serr := m.switchInPlace(rec.Name, was.System); serr != nil {
				return "", fmt.Errorf("%w; switching back to %s failed too: %v", err, back, serr)
			}
			if rerr := m.recordSwitch(ctx, rec.Name, was.Generation, was.System); rerr != nil {
				return "", fmt.Errorf("%w; %s was switched back in, but not recorded: %v", err, back, rerr)
			}
		}
		return "", fmt.Errorf("%w; %s was switched back in", err, back)
	}
	if err := m.recordSwitch(ctx, rec.Name, gen, system); err != nil {
		return "", err
	}
	return AppliedSwitched, nil
}

// recordSwitch records in the run table that the running init now runs
// generation gen.
func (m *Manager) recordSwitch(ctx context.Context, name string, gen int, system string) error {
	return m.changeRuns(ctx, func(runs state.Runs) error {
		if r, ok := runs[name]; ok {
			r.Generation, r.System, r.Switching = gen, system, ""
			runs[name] = r
		}
		return nil
	})
}

// ErrNoGenerations is the class of generation operations on a container
// that has none: one that boots a plain root file system.
var ErrNoGenerations = fault.New(fault.State, "does not apply")

// noGenerations refuses generation operations on a plain root container.
func noGenerations(rec *state.Container) error {
	if rec.Source.RootFS == "" {
		return nil
	}
	return fmt.Errorf("%w: it boots the plain root file system %s (--rootfs), which has no NixOS system and no generations; change the files in that directory instead", ErrNoGenerations, rec.Source.RootFS)
}

// ErrSwitchFailed is the class of failed in-place switches.
var ErrSwitchFailed = fault.New(fault.Switch, "switch-to-configuration failed")

// switchInPlace runs system's switch-to-configuration inside the running
// container, as nixos-rebuild switch does on a host. Its output goes to Log.
func (m *Manager) switchInPlace(name, system string) error {
	code, err := runtime.Exec{
		Args:  []string{system + "/bin/switch-to-configuration", "switch"},
		Stdio: runtime.Stdio{Stdout: m.Log, Stderr: m.Log},
	}.Run(m.Store.RuntimeRoot(), name)
	if err != nil {
		return fmt.Errorf("running switch-to-configuration: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("%w (exit status %d; its output is above)", ErrSwitchFailed, code)
	}
	return nil
}

// SwitchGeneration makes generation n current and applies it as Update
// does: switched in place when running (undone on failure), booted next
// time when stopped.
func (m *Manager) SwitchGeneration(ctx context.Context, name string, n int) (ChangeResult, error) {
	return m.changeGeneration(ctx, name, func(gens []nix.Generation, current int) (int, error) {
		for _, g := range gens {
			if g.Number == n {
				return n, nil
			}
		}
		return 0, fmt.Errorf("%w: there is no generation %d (nixcell list-generations %s)", nix.ErrBadGenerations, n, name)
	})
}

// Rollback switches to the generation before the current one.
func (m *Manager) Rollback(ctx context.Context, name string) (ChangeResult, error) {
	return m.changeGeneration(ctx, name, func(gens []nix.Generation, current int) (int, error) {
		prev := 0
		for _, g := range gens {
			if g.Number < current {
				prev = g.Number
			}
		}
		if prev == 0 {
			return 0, fmt.Errorf("%w: there is no generation before %d", nix.ErrBadGenerations, current)
		}
		return prev, nil
	})
}

func (m *Manager) changeGeneration(ctx context.Context, name string, pick func(gens []nix.Generation, current int) (int, error)) (res ChangeResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	rec, st, unlock, err := m.locked(ctx, name, lifecycle.Update)
	if err != nil {
		return res, err
	}
	defer unlock()
	profile, gens, current, err := generationsOf(rec)
	if err != nil {
		return res, err
	}
	res.Previous = current
	if res.Generation, err = pick(gens, res.Previous); err != nil {
		return res, err
	}
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	if res.Generation != res.Previous {
		if err := profile.SwitchTo(ctx, res.Generation); err != nil {
			return res, err
		}
		previous := res.Previous
		u.Push(fmt.Sprintf("switching the profile back to generation %d", previous), func(ctx context.Context) error {
			return profile.SwitchTo(ctx, previous)
		})
	}
	if err := failpoint.Hit("switch/profile"); err != nil {
		return res, err
	}
	_, res.System, _ = profile.Current()
	res.Applied, err = m.applyLocked(ctx, rec, st, false)
	return res, err
}

// GenerationInfo is one line of list-generations.
type GenerationInfo struct {
	nix.Generation
	Current bool `json:"current"`
	Running bool `json:"running"`
}

// ListGenerations reports the container's generations, oldest first.
func (m *Manager) ListGenerations(name string) ([]GenerationInfo, error) {
	if err := spec.ValidateName(name); err != nil {
		return nil, err
	}
	rec, err := m.Store.Load(name)
	if err != nil {
		return nil, err
	}
	_, gens, current, err := generationsOf(rec)
	if err != nil {
		return nil, err
	}
	running, _, err := m.runningOf(rec)
	if err != nil {
		return nil, err
	}
	infos := make([]GenerationInfo, 0, len(gens))
	for _, g := range gens {
		infos = append(infos, GenerationInfo{Generation: g, Current: g.Number == current, Running: g.Number == running.Generation})
	}
	return infos, nil
}

// DeleteGenerations deletes generations selected with nix-env's forms
// (numbers, old, +N, Nd); the current and the running generation are never
// deleted. It returns the numbers deleted.
func (m *Manager) DeleteGenerations(ctx context.Context, name string, selection []string) ([]int, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Update)
	if err != nil {
		return nil, err
	}
	defer unlock()
	profile, gens, current, err := generationsOf(rec)
	if err != nil {
		return nil, err
	}
	selected, err := nix.SelectForDeletion(gens, current, selection, time.Now())
	if err != nil {
		return nil, err
	}
	running, isRunning, err := m.runningOf(rec)
	if err != nil {
		return nil, err
	}
	var doomed []int
	for _, n := range selected {
		if isRunning && n == running.Generation {
			explicit := false
			for _, a := range selection {
				explicit = explicit || a == fmt.Sprint(n)
			}
			if explicit {
				return nil, fmt.Errorf("%w: generation %d is running; switch or restart the container first", nix.ErrBadGenerations, n)
			}
			continue
		}
		doomed = append(doomed, n)
	}
	if err := profile.Delete(ctx, doomed); err != nil {
		return nil, err
	}
	return doomed, nil
}

// generationsOf reads the generations of rec's profile and the current one.
func generationsOf(rec *state.Container) (nix.Profile, []nix.Generation, int, error) {
	profile := nix.Profile{Name: rec.Name}
	if err := noGenerations(rec); err != nil {
		return profile, nil, 0, err
	}
	gens, err := profile.Generations()
	if err != nil {
		return profile, nil, 0, err
	}
	current, _, err := profile.Current()
	return profile, gens, current, err
}

// runningOf returns what the container's live init runs, from the run
// table; ok is false when it does not run.
func (m *Manager) runningOf(rec *state.Container) (state.Run, bool, error) {
	_, status, err := m.stateOf(rec)
	if err != nil {
		return state.Run{}, false, err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return state.Run{}, false, err
	}
	r, ok := runOf(runs, rec.Name, status)
	return r, ok, nil
}
