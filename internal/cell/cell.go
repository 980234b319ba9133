// Package cell owns the container operations users ask for (create, start,
// stop, exec, destroy, ...): it composes the configuration (spec), the
// system build (nix), the ID ranges (idmap), the records and locks (state)
// and the running processes (runtime) into steps that either finish or are
// undone. Every operation that changes a container holds its lock.
package cell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/console"
	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/kernel"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/systemd"
)

// DefaultStopTimeout is how long stop waits for a clean shutdown before it
// kills, as nixos-container's systemd unit does.
const DefaultStopTimeout = 90 * time.Second

// DefaultStartTimeout is how long start --wait waits for readiness, as
// systemd's default start timeout.
const DefaultStartTimeout = 90 * time.Second

// Manager performs operations on the containers of one state directory.
type Manager struct {
	Store state.Store
	IDs   *idmap.Allocator
	Net   network.Store
	// host is what the network needs of the host at every change.
	host network.Host
	// Log receives progress and warnings for people (stderr in the CLI).
	Log io.Writer
	// NixLog receives Nix's build output as it runs.
	NixLog io.Writer
}

// Open returns a Manager for the instance cfg describes, creating its state
// directory.
func Open(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = state.DefaultRoot
	}
	st, err := state.New(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if err := st.Init(); err != nil {
		return nil, err
	}
	n := cfg.Network
	return &Manager{
		Store: st,
		IDs:   idmap.New(idmap.Config{Instance: st.Root, LegacyPath: st.IDMapPath()}),
		Net: network.Store{Path: st.NetworkPath(), LockPath: st.GlobalLockPath(), ID: st.ID, AppliedPath: st.NetworkAppliedPath(),
			HostPorts: network.DefaultHostPortsPath, Instance: st.Root,
			Config: network.Config{HostOnly: n.HostOnlySubnet, NAT: n.NATSubnet, ULA: n.ULAPrefix, NAT6: n.NATIPv6Prefix}},
		host:   network.Host{Uplink: n.Uplink, HostsFile: n.HostsFile},
		Log:    io.Discard,
		NixLog: io.Discard,
	}, nil
}

func (m *Manager) warnf(format string, args ...any) {
	fmt.Fprintf(m.Log, "warning: "+format+"\n", args...)
}

// Info is what list and state report of a container. Fields are only ever
// added, so scripts can rely on the JSON.
type Info struct {
	Name  string          `json:"name"`
	State lifecycle.State `json:"state"`
	// Generation and System are the profile's current generation: what
	// the next start boots.
	Generation int    `json:"generation"`
	System     string `json:"system,omitempty"`
	// RunningGeneration is the generation the running container runs (0
	// when stopped); it differs from Generation only after an interrupted
	// update.
	RunningGeneration int       `json:"runningGeneration,omitempty"`
	Pid               int       `json:"pid,omitempty"`
	StartedAt         time.Time `json:"startedAt,omitzero"`
	Autostart         bool      `json:"autostart"`
	Privileged        bool      `json:"privileged"`
	// RootFS is the directory a plain root file system container (create
	// --rootfs) boots; such a container has no generations.
	RootFS string `json:"rootfs,omitempty"`
	// IDs is the host range the container's user IDs map to.
	IDs       *idmap.Range `json:"ids,omitempty"`
	IPv4      string       `json:"ipv4"`
	IPv6      string       `json:"ipv6"`
	CreatedAt time.Time    `json:"createdAt"`

	// Limits are the limits in effect (zero fields: unlimited).
	Limits spec.Limits `json:"limits"`
	// LastExit is how its init ended, for a stopped container that ran
	// since its last start.
	LastExit *Exit `json:"lastExit,omitempty"`
}

// Inspect reports the state of the named container.
func (m *Manager) Inspect(name string) (Info, error) {
	if err := spec.ValidateName(name); err != nil {
		return Info{}, err
	}
	shared, err := m.sharedState()
	if err != nil {
		return Info{}, err
	}
	return m.inspect(name, shared)
}

// List reports every container, sorted by name.
func (m *Manager) List() ([]Info, error) {
	names, err := m.Store.Names()
	if err != nil {
		return nil, err
	}
	shared, err := m.sharedState()
	if err != nil {
		return nil, err
	}
	infos := []Info{}
	for _, n := range names {
		info, err := m.inspect(n, shared)
		if errors.Is(err, state.ErrNotFound) {
			continue // a directory left by an interrupted create
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// instanceState is what Info needs of the instance-wide files, read once
// for a whole listing.
type instanceState struct {
	net    network.State
	netOK  bool // addresses are reported only when the network state reads
	ranges map[string]idmap.Range
	runs   state.Runs
}

func (m *Manager) sharedState() (instanceState, error) {
	var sh instanceState
	var err error
	sh.net, err = m.Net.Load()
	sh.netOK = err == nil
	if sh.runs, err = m.Store.LoadRuns(); err != nil {
		return sh, err
	}
	sh.ranges, err = m.IDs.All()
	return sh, err
}

// inspect reads the container's Info. It takes no lock, so a stop or a
// destroy under way may remove what it reads between two of its reads
// (the runtime state, the profile's links); then it reads once more, and
// finds the container gone (state.ErrNotFound, which List skips), marked
// destroying, or as the command left it.
func (m *Manager) inspect(name string, shared instanceState) (Info, error) {
	info, err := m.inspectOnce(name, shared)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		info, err = m.inspectOnce(name, shared)
	}
	return info, err
}

// lacks tells whether sh holds none of the allocations a created rec
// has: its ID range (unless privileged) and its addresses.
func (sh instanceState) lacks(rec *state.Container) bool {
	_, ranged := sh.ranges[rec.Name]
	_, addressed := sh.net.Addresses[rec.Name]
	return (!ranged && !rec.Spec.Privileged) || (sh.netOK && !addressed)
}

func (m *Manager) inspectOnce(name string, shared instanceState) (Info, error) {
	rec, err := m.Store.Load(name)
	if err != nil {
		return Info{}, err
	}
	if rec.Phase == state.Created && shared.lacks(rec) {
		// The instance-wide files were read before the record, and a
		// create finished in between: read them again, or the container
		// would show without its ID range or addresses.
		if shared, err = m.sharedState(); err != nil {
			return Info{}, err
		}
	}
	st, status, err := m.stateOf(rec)
	if err != nil {
		return Info{}, err
	}
	info := Info{
		Name: name, State: st, Pid: status.Pid, StartedAt: status.StartedAt,
		Autostart: rec.Spec.Autostart, Privileged: rec.Spec.Privileged, CreatedAt: rec.CreatedAt,
		RootFS: rec.Source.RootFS, Limits: rec.Limits(),
	}
	if rec.Source.RootFS == "" {
		// A destroy may be removing the profile: then it shows none.
		info.Generation, info.System, err = nix.Profile{Name: name}.Current()
		if err != nil && st != lifecycle.Destroying {
			return Info{}, err
		}
	}
	if r, ok := runOf(shared.runs, name, status); ok {
		info.RunningGeneration = r.Generation
	}
	if st == lifecycle.Stopped {
		if e, ok := runtime.LastExitOf(m.Store.RuntimeRoot(), name, m.Store.ConsoleLog(name)); ok {
			exit := exitOf(e)
			info.LastExit = &exit
		}
	}
	if shared.netOK {
		a := m.addresses(rec, shared.net)
		info.IPv4, info.IPv6 = a.IPv4, a.IPv6
	}
	if r, ok := shared.ranges[name]; ok {
		info.IDs = &r
	}
	return info, nil
}

// Exists tells whether a container of that name exists.
func (m *Manager) Exists(name string) (bool, error) {
	if err := spec.ValidateName(name); err != nil {
		return false, err
	}
	_, err := m.Store.Load(name)
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// stateOf derives the lifecycle state from the record and the runtime.
func (m *Manager) stateOf(rec *state.Container) (lifecycle.State, runtime.Status, error) {
	switch rec.Phase {
	case state.Creating:
		return lifecycle.Creating, runtime.Status{}, nil
	case state.Destroying:
		return lifecycle.Destroying, runtime.Status{}, nil
	}
	status, err := runtime.Inspect(m.Store.RuntimeRoot(), rec.Name)
	if err != nil {
		return "", status, err
	}
	if status.Running {
		return lifecycle.Running, status, nil
	}
	return lifecycle.Stopped, status, nil
}

// locked loads the container under its lock and checks that op is allowed.
// The caller must call unlock.
func (m *Manager) locked(ctx context.Context, name string, op lifecycle.Op) (rec *state.Container, st lifecycle.State, unlock func(), err error) {
	lock, err := m.lock(ctx, name)
	if err != nil {
		return nil, "", nil, err
	}
	unlock = func() { _ = lock.Unlock() }
	rec, err = m.Store.Load(name)
	if err == nil && rec.Phase == state.Created {
		err = m.Store.RemovePartial(name)
	}
	if err == nil {
		st, _, err = m.stateOf(rec)
	}
	if err == nil && st == lifecycle.Stopped {
		err = m.finishStopped(ctx, name)
	}
	if err == nil {
		err = lifecycle.Check(st, op)
	}
	if err == nil {
		// What a command that died left half done (a copy's freeze, a
		// restore) is finished before anything else.
		err = m.recoverLocked(name)
	}
	if err != nil {
		m.unlockMissing(lock, name)
		return nil, "", nil, err
	}
	return rec, st, unlock, nil
}

// finishStopped removes what a start or stop that was killed, or an init
// that died on its own, left of a container that does not run: its
// runtime state, cgroups and host directory, and its run record with the
// network that served it. So every command that takes the lock finds the
// container as a clean stop leaves it. Preconditions: the container's
// lock is held and it does not run.
func (m *Manager) finishStopped(ctx context.Context, name string) error {
	if err := runtime.Cleanup(m.place(name)); err != nil {
		return fmt.Errorf("removing what a stopped run of %s left: %w", name, err)
	}
	if may, err := m.Store.MayHaveRun(name); err != nil || !may {
		return err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return err
	}
	if _, ok := runs[name]; ok {
		return m.netStop(ctx, name, true)
	}
	return nil
}

// lock validates the name and takes the container's lock.
func (m *Manager) lock(ctx context.Context, name string) (*lockfile.Handle, error) {
	if err := spec.ValidateName(name); err != nil {
		return nil, err
	}
	return m.Store.Lock(ctx, name)
}

// unlockMissing releases a lock, deleting its file when the container does
// not exist, so asking for an unknown container leaves nothing behind.
func (m *Manager) unlockMissing(lock *lockfile.Handle, name string) {
	if !dirExists(m.Store.Dir(name)) {
		_ = lock.Remove()
		return
	}
	_ = lock.Unlock()
}

// runtimeContainer is what the runtime needs to boot rec.
func (m *Manager) runtimeContainer(rec *state.Container) (*runtime.Container, error) {
	p := m.place(rec.Name)
	c := &runtime.Container{
		Name:           rec.Name,
		StateRoot:      p.StateRoot,
		HostDir:        p.HostDir,
		RootFS:         m.Store.RootFS(rec.Name),
		CgroupPath:     p.CgroupPath,
		ConsoleLog:     m.Store.ConsoleLog(rec.Name),
		ConsoleLogSize: rec.Spec.ConsoleLogSize,
		ConsoleAgent:   m.consoleAgent(),
		InitArgs:       rec.Spec.InitArgs,
		Ephemeral:      rec.Spec.Ephemeral,
		Tmpfs:          rec.Spec.Tmpfs,
		UUID:           uuidOf(rec),
		Limits:         runtimeLimits(rec.Limits()),
	}
	if !rec.Spec.Privileged {
		r, ok, err := m.IDs.Lookup(rec.Name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("it holds no ID range; destroy and create it again")
		}
		c.IDs = runtime.IDRange{Start: r.Start, Size: r.Size}
	}
	for _, b := range rec.Spec.BindMounts {
		c.Binds = append(c.Binds, runtime.Bind{Source: b.HostPath, Destination: b.Destination, ReadOnly: b.IsReadOnly, Create: b.Create, HostIDs: b.WriteAsHostRoot})
	}
	c.DeviceDir = m.Store.DeviceDir(rec.Name)
	c.SystemdSlice, c.SystemdScopePrefix = p.SystemdSlice, p.SystemdScopePrefix
	for _, d := range rec.Spec.AllowedDevices {
		c.Devices = append(c.Devices, runtime.Device{Path: d.Node, Permissions: d.Modifier})
	}
	if rec.Source.RootFS != "" {
		c.RootFS, c.PlainRoot, c.Init = rec.Source.RootFS, true, rec.Source.Init
		if fi, err := os.Stat(c.RootFS); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("its root file system %s is not a directory; restore it, or destroy the container", c.RootFS)
		}
		c.Systemd = initIsSystemd(c.RootFS, c.Init)
		return c, nil
	}
	profile := nix.Profile{Name: rec.Name}
	if err := profile.Ensure(int(c.IDs.Start)); err != nil {
		return nil, err
	}
	c.ProfileDir, c.UserProfilesDir, c.GCRootsDir = profile.Dir(), profile.UserProfilesDir(), profile.GCRootsDir()
	c.Init = "/nix/var/nix/profiles/system/init"
	gen, system, err := profile.Current()
	if err != nil {
		return nil, err
	}
	if gen == 0 {
		return nil, fmt.Errorf("its profile %s has no generation; run update to build one", profile.System())
	}
	// A NixOS system's top level links the systemd its init runs.
	_, err = os.Stat(filepath.Join(system, "systemd"))
	c.Systemd = err == nil
	if rec.Spec.Store == "closure" {
		c.ClosureViewDir = m.Store.ClosureViewDir(rec.Name)
		if c.StorePaths, err = m.closure(rec.Name, system); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// prepareStore makes, for a container that sees only its system's
// closure, the closure (cached) and the mount points of its view that its
// next start uses, so that the first start after a create or an update
// takes no longer than the next ones (making the view of a thousand paths
// takes tens of milliseconds). A failure is only warned of: that start
// makes them itself, or says what is wrong. Preconditions: the container's
// lock is held.
func (m *Manager) prepareStore(rec *state.Container) {
	if rec.Spec.Store != "closure" {
		return
	}
	c, err := m.runtimeContainer(rec)
	if err == nil {
		err = c.PrepareClosureView()
	}
	if err != nil {
		m.warnf("preparing the closure store of %s (its next start does it): %v", rec.Name, err)
	}
}

// place is where the container's runtime state is, or would be.
func (m *Manager) place(name string) runtime.Place {
	p := runtime.Place{StateRoot: m.Store.RuntimeRoot(), Name: name, HostDir: m.Store.HostDir(name), CgroupPath: m.Store.CgroupPath(name)}
	if systemd.Host() && kernel.Cgroups() == kernel.CgroupV2 {
		// systemd makes the cgroup: a scope in the instance's slice.
		p.SystemdSlice, p.SystemdScopePrefix = systemd.Slice(m.Store.CgroupParent)
	}
	return p
}

// consoleAgent is the instance's console agent, which keeps the consoles
// of its detached containers.
func (m *Manager) consoleAgent() console.Agent {
	return console.Agent{Socket: m.Store.ConsoleSocketPath(), Lock: m.Store.ConsoleLockPath()}
}

// closure returns the store paths of system's closure, from the
// container's cache when it holds that system's (a closure never changes).
func (m *Manager) closure(name, system string) ([]string, error) {
	var cached struct {
		System string   `json:"system"`
		Paths  []string `json:"paths"`
	}
	path := m.Store.ClosureCache(name)
	if atomicfile.ReadJSON(path, &cached) == nil && cached.System == system && len(cached.Paths) > 0 {
		return cached.Paths, nil
	}
	paths, err := nix.Closure(context.Background(), system)
	if err != nil {
		return nil, fmt.Errorf("finding the closure of %s: %w", system, err)
	}
	cached.System, cached.Paths = system, paths
	if err := atomicfile.WriteJSON(path, cached, 0o600); err != nil {
		m.warnf("caching the closure of %s: %v", system, err)
	}
	return paths, nil
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// absConfigPath resolves a configuration path given on the command line.
func absConfigPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("configuration file %s: %w", path, errors.Unwrap(err))
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(abs, "default.nix")); err != nil {
			return "", fmt.Errorf("configuration %s is a directory without default.nix", path)
		}
	}
	return abs, nil
}

// Autostart starts every stopped container whose configuration has
// autostart = true, as a host's boot does; it goes on past failures and
// returns the names it started and the errors of the others.
func (m *Manager) Autostart(ctx context.Context) (started []string, err error) {
	names, err := m.Store.Names()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range names {
		rec, err := m.Store.Load(n)
		if err != nil || !rec.Spec.Autostart || rec.Phase != state.Created {
			continue
		}
		if st, _, err := m.stateOf(rec); err != nil || st != lifecycle.Stopped {
			continue
		}
		if err := m.Start(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
			continue
		}
		started = append(started, n)
	}
	return started, errors.Join(errs...)
}
