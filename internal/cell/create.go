package cell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/undo"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

// CreateRequest says how to make a new container. Exactly one of
// ConfigFile, Expr, Flake, SystemPath and RootFS is set, except that a
// SystemPath or RootFS container may have a ConfigFile or Expr of
// host-side settings (its system is given, so they hold no NixOS module).
type CreateRequest struct {
	Name string
	// ConfigFile is a configuration in either of nixcloud-container's
	// forms (a NixOS module, or an attribute set with `configuration`).
	ConfigFile string
	// Expr is an inline configuration, as the content of such a file.
	Expr string
	// Flake is "REF#NAME" (or "REF" for the container's name): the flake's
	// nixosConfigurations.NAME is built.
	Flake string
	// SystemPath is a prebuilt NixOS system in the store.
	SystemPath string
	// NixArgs are extra arguments for Nix, kept for later updates.
	NixArgs []string
	// Privileged runs the container without a user namespace.
	Privileged bool
	// RootFS, instead of a NixOS system, is a directory tree to boot as
	// the container's root, as systemd-nspawn -D does; Init is the program
	// inside it to run as PID 1 (default DefaultInit).
	RootFS, Init string
	// Limits replace the configuration's limits (--memory, --cpus,
	// --pids); they are kept for later updates.
	Limits spec.LimitOverrides
}

// DefaultInit is the init of a plain root file system container unless
// create --init says otherwise.
const DefaultInit = "/sbin/init"

// ErrBadRequest is the class of requests that are wrong before anything is
// looked at.
var ErrBadRequest = fault.New(fault.Usage, "bad request")

func (r CreateRequest) validate() error {
	n := 0
	for _, s := range []string{r.ConfigFile, r.Expr, r.Flake, r.SystemPath, r.RootFS} {
		if s != "" {
			n++
		}
	}
	if r.Init != "" && r.RootFS == "" {
		return fmt.Errorf("%w: --init goes with --rootfs; a NixOS system's init is its own", ErrBadRequest)
	}
	switch {
	case r.RootFS != "" && (r.Flake != "" || r.SystemPath != ""):
		return fmt.Errorf("%w: --rootfs DIR is the container's system; it goes without --flake or --system", ErrBadRequest)
	case r.RootFS != "" && n > 2:
		return fmt.Errorf("%w: give --rootfs DIR with at most one of a settings file or -c EXPR", ErrBadRequest)
	case r.RootFS == "" && n == 0:
		return fmt.Errorf("%w: give a configuration: CONFIG.nix, -c EXPR, --flake REF#NAME, --system PATH or --rootfs DIR", ErrBadRequest)
	case r.SystemPath != "" && r.Flake == "" && n == 2:
		// --system PATH with a file or -c EXPR of host-side settings.
	case r.RootFS == "" && n != 1:
		return fmt.Errorf("%w: give exactly one of a configuration file, -c EXPR, --flake REF, --system PATH or --rootfs DIR", ErrBadRequest)
	}
	return spec.ValidateName(r.Name)
}

// Create builds the container's first generation and records it. It either
// finishes or leaves nothing behind; if it is killed, the record stays in
// the Creating phase and the next create or destroy of the name cleans up.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (retErr error) {
	if err := req.validate(); err != nil {
		return err
	}
	var err error
	if req.ConfigFile != "" {
		if req.ConfigFile, err = absConfigPath(req.ConfigFile); err != nil {
			return err
		}
	}
	if req.SystemPath != "" {
		if err := nix.CheckSystem(req.SystemPath); err != nil {
			return err
		}
	}
	if req.Flake != "" {
		if req.Flake, err = nix.FlakeRef(req.Flake, req.Name); err != nil {
			return err
		}
	}
	if req.RootFS != "" {
		if req.Init == "" {
			req.Init = DefaultInit
		}
		if req.RootFS, err = checkRootFS(req.RootFS, req.Init); err != nil {
			return err
		}
	}
	lock, err := m.Store.Lock(ctx, req.Name)
	if err != nil {
		return err
	}
	// A create refused before it made anything (another's profile of
	// that name) leaves no lock file either.
	defer m.unlockMissing(lock, req.Name)

	profile := nix.Profile{Name: req.Name}
	rec, err := m.Store.Load(req.Name)
	switch {
	case err == nil && rec.Phase == state.Created:
		return fmt.Errorf("%w: %q (destroy it first, or update it)", state.ErrExists, req.Name)
	case err == nil || dirExists(m.Store.Dir(req.Name)):
		fmt.Fprintf(m.Log, "cleaning up an interrupted create of %s\n", req.Name)
		if err := m.removeAll(ctx, rec, req.Name); err != nil {
			return fmt.Errorf("cleaning up an interrupted create: %w", err)
		}
	case !errors.Is(err, state.ErrNotFound):
		return err
	default:
		// A profile nixcell does not know of belongs to someone else, such
		// as a nixos-container container of the same name.
		if _, err := os.Lstat(profile.Dir()); err == nil {
			return fmt.Errorf("%w: a Nix profile already exists at %s (another instance's or another tool's container of that name?); choose another name or remove it", state.ErrExists, profile.Dir())
		}
	}

	id, err := newUUID()
	if err != nil {
		return err
	}
	rec = &state.Container{
		Name: req.Name, Phase: state.Creating, CreatedAt: time.Now().UTC().Truncate(time.Second), UUID: id,
		Source: state.Source{ConfigFile: req.ConfigFile, Flake: req.Flake, SystemPath: req.SystemPath, NixArgs: req.NixArgs,
			RootFS: req.RootFS, Init: req.Init},
		LimitOverrides: req.Limits,
	}
	// Each step pushes its undo; a failure takes back the finished ones,
	// newest first. A create killed halfway leaves the record in the
	// creating phase, which the next create or destroy of the name cleans
	// up (removeAll).
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	// Pushed before the record is written: a write that fails (a full
	// file system) may leave the directory, and the lock file is there.
	u.Push("removing the record", func(ctx context.Context) error {
		if err := m.Store.Remove(req.Name); err != nil {
			return err
		}
		defer m.tidyRun(ctx)
		return lock.Remove()
	})
	if err := m.Store.Save(rec); err != nil {
		return fmt.Errorf("recording %s: %w", req.Name, err)
	}
	if err := failpoint.Hit("create/recorded"); err != nil {
		return err
	}
	if req.RootFS == "" {
		// The check above is not enough: another instance may be making
		// a container of this name right now.
		if err := claimProfile(&u, profile); err != nil {
			return err
		}
	}

	if req.Expr != "" {
		path := m.Store.InlineConfig(req.Name)
		if err := atomicfile.WriteFile(path, []byte(req.Expr+"\n"), 0o644); err != nil {
			return err
		}
		rec.Source.ConfigFile, rec.Source.Inline = path, true
	}
	if rec.Source.ConfigFile != "" {
		if rec.Spec, err = m.settings(ctx, rec); err != nil {
			return err
		}
	}
	if err := failpoint.Hit("create/evaluated"); err != nil {
		return err
	}
	rec.Spec.Privileged = rec.Spec.Privileged || req.Privileged
	if err := checkPlainRootSpec(rec); err != nil {
		return err
	}
	if rec.Source.RootFS != "" && !rec.Spec.Privileged {
		if err := runtime.CheckPlainRootClosed(rec.Source.RootFS); err != nil {
			return fmt.Errorf("root file system: %w", err)
		}
	}
	m.warnExposures(rec)
	if err := m.allocateAddresses(ctx, rec); err != nil {
		return err
	}
	u.Push("releasing its addresses and ports", func(ctx context.Context) error { return m.releaseAddresses(ctx, req.Name) })
	if err := failpoint.Hit("create/addresses"); err != nil {
		return err
	}
	rootUID := 0
	if rec.Spec.Privileged {
		m.warnf("%s is privileged: its root is the host's root", req.Name)
	} else {
		r, err := m.IDs.Allocate(ctx, req.Name)
		if err != nil {
			return fmt.Errorf("allocating an ID range: %w", err)
		}
		u.Push("releasing its ID range", func(ctx context.Context) error { return m.IDs.Release(ctx, req.Name) })
		rootUID = int(r.Start)
	}
	if err := failpoint.Hit("create/ids"); err != nil {
		return err
	}
	if disk := rec.Limits().DiskBytes; disk > 0 {
		if err := m.setDiskLimit(rec, disk); err != nil {
			return err
		}
		u.Push("removing its disk quota", func(context.Context) error { return m.setDiskLimit(rec, 0) })
	}

	if rec.Source.RootFS == "" {
		system := rec.Source.SystemPath
		if system == "" {
			if system, err = m.build(ctx, rec); err != nil {
				return err
			}
			defer os.Remove(m.Store.BuildLink(req.Name))
		}
		if err := failpoint.Hit("create/built"); err != nil {
			return err
		}
		if err := profile.Ensure(rootUID); err != nil {
			return err
		}
		if _, err := profile.Set(ctx, system); err != nil {
			return fmt.Errorf("setting profile %s: %w", profile.System(), err)
		}
		if err := failpoint.Hit("create/profile"); err != nil {
			return err
		}
	}
	rec.Phase = state.Created
	if err := m.Store.Save(rec); err != nil {
		return err
	}
	m.autostartUnit(ctx, rec.Name, rec.Spec.Autostart)
	m.prepareStore(rec)
	return nil
}

// checkPlainRootSpec refuses the settings that have no meaning for a
// plain root container.
func checkPlainRootSpec(rec *state.Container) error {
	if rec.Source.RootFS != "" && rec.Spec.Store == "closure" {
		return fmt.Errorf("%w: store = \"closure\" selects what a NixOS system sees of /nix/store; a plain root file system gets no Nix store (bind-mount what it needs)", spec.ErrInvalidSpec)
	}
	return nil
}

// invocation is how Nix is called for rec. The module arguments come from
// its allocated addresses: `ip` is its IPv4 address, and the name server
// its bridge's.
func (m *Manager) invocation(rec *state.Container) nix.Invocation {
	inv := nix.Invocation{
		Name: rec.Name, ConfigFile: rec.Source.ConfigFile, Flake: rec.Source.Flake, Args: rec.Source.NixArgs, Log: m.NixLog,
	}
	if st, err := m.Net.Load(); err == nil {
		inv.IP = m.addresses(rec, st).IPv4
		if st.Addresses[rec.Name].HostOnly4.IsValid() {
			hostOnly, _ := st.Settings.Bridges()
			inv.Nameserver = hostOnly.IPv4.Addr().String()
		}
	}
	return inv
}

// settings evaluates and parses the host-side part of the configuration.
func (m *Manager) settings(ctx context.Context, rec *state.Container) (spec.Spec, error) {
	settings := m.invocation(rec).Settings
	if rec.Source.RootFS != "" || rec.Source.SystemPath != "" {
		// The system is given: the file holds host-side settings only.
		settings = m.invocation(rec).HostSettings
	}
	raw, err := settings(ctx)
	if err != nil {
		return spec.Spec{}, fmt.Errorf("evaluating %s: %w", rec.Source.ConfigFile, err)
	}
	s, err := spec.Parse(raw)
	if err != nil {
		return s, fmt.Errorf("%s: %w", rec.Source.ConfigFile, err)
	}
	return s, nil
}

// build builds the container's system; the result stays rooted by the
// build link until the caller has put it in the profile.
func (m *Manager) build(ctx context.Context, rec *state.Container) (string, error) {
	fmt.Fprintf(m.Log, "building the system of %s\n", rec.Name)
	start := time.Now()
	path, err := m.invocation(rec).Build(ctx, m.Store.BuildLink(rec.Name))
	if err != nil {
		what := rec.Source.ConfigFile
		if rec.Source.Flake != "" {
			what = rec.Source.Flake
		}
		return "", fmt.Errorf("building %s: %w", what, err)
	}
	fmt.Fprintf(m.Log, "built %s in %.1fs\n", path, time.Since(start).Seconds())
	return path, nil
}

// warnExposures warns of the settings that let the container's root write
// as the host's root in a host directory: bind mounts with
// writeAsHostRoot, worst where host users can reach the directory.
func (m *Manager) warnExposures(rec *state.Container) {
	if rec.Spec.Privileged {
		return
	}
	for _, b := range rec.Spec.BindMounts {
		if !b.WriteAsHostRoot {
			continue
		}
		reach := "keep it where only root can reach it"
		if err := hostfs.CheckClosed(b.HostPath); err != nil {
			reach = err.Error() + ": they could run a setuid-root program it plants there"
		}
		m.warnf("%s: bind mount %s: the container's root writes to %s as the host's root (writeAsHostRoot); %s",
			rec.Name, b.Destination, b.HostPath, reach)
	}
}

// claimProfile makes the new container's profile directory, refusing a
// name whose profile exists: profiles are named host-wide, so of two
// containers of one name made in two instances at once, only one may have
// it (the directory's creation is the atomic test; a check before it is
// not). The profile goes when u unwinds.
func claimProfile(u *undo.Stack, profile nix.Profile) error {
	if err := profile.Claim(); errors.Is(err, nix.ErrProfileTaken) {
		return fmt.Errorf("%w: a Nix profile already exists at %s (another instance's or another tool's container of that name?); choose another name or remove it", state.ErrExists, profile.Dir())
	} else if err != nil {
		return err
	}
	u.Push("removing its profile", func(context.Context) error { return profile.Remove() })
	return nil
}
