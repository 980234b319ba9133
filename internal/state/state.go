// Package state owns nixcell's on-disk state: the directory layout under the
// state directory, the container records, and the locks that serialize
// changes to them. Records are written atomically (write, fsync, rename);
// a change to a container holds that container's lock, and global
// allocations hold the global lock.
//
// Layout:
//
//	STATE/containers/NAME/container.json   the record (Container)
//	STATE/containers/NAME/configuration.nix an inline (-c) configuration
//	STATE/containers/NAME/console.log      the init's console output (and console.log.1; the console agent writes them)
//	STATE/containers/NAME/last-exit.json   how its last init ended (and init-exit.PID; see runtime)
//	STATE/containers/NAME/closure.json     the closure of its system, for store = "closure"
//	STATE/containers/NAME/closure-view/    the mount points of that closure's view (see runtime)
//	STATE/containers/NAME/root/            the container's root, owned by its ID range
//	STATE/idmap.json                       ID ranges of before they were host-wide (idmap adopts and removes it)
//	STATE/network.json                     network settings and addresses held by containers
//	STATE/locks/NAME.lock                  the containers' flock(2) locks (nothing else)
//	STATE/global.lock                      the instance's lock (network, run table)
//	STATE/run-dir                          RUN, for a non-default instance (RunDirFile)
//	RUN/containers/NAME/                   libcontainer's state of a running container
//	RUN/host/NAME/                         files the host gives a running container (HostDir)
//	RUN/runs.json                          which containers start or run, and what (Runs)
//	RUN/network.applied                    the digest of the rules last applied (network.Store)
//	RUN/console.sock, console.lock         the instance's console agent (package console)
package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nixcell/nixcell/internal/fault"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// Default directories; NIXCELL_STATE_DIR or --state-dir replace DefaultRoot
// so that several isolated instances (tests) can run on one host.
const (
	DefaultRoot = "/var/lib/nixcell"
	DefaultRun  = "/run/nixcell"
)

// ErrNotFound means no container of that name exists.
var ErrNotFound = fault.New(fault.NotFound, "no such container")

// ErrExists means a container of that name exists already.
var ErrExists = fault.New(fault.Exists, "container already exists")

// Phase is how far a container's creation got.
type Phase string

const (
	// Creating is written before anything else of a new container: one
	// found in this phase was interrupted, and create or destroy may undo
	// whatever exists of it.
	Creating Phase = "creating"
	// Created containers are complete.
	Created Phase = "created"
	// Destroying is written when a destroy begins: one found in this phase
	// was interrupted, and destroy finishes it.
	Destroying Phase = "destroying"
)

// Container is a container's record. It changes only under the
// container's lock.
type Container struct {
	Name      string    `json:"name"`
	Phase     Phase     `json:"phase"`
	CreatedAt time.Time `json:"createdAt"`
	// Source says where the current generation's system came from; update
	// without a new source rebuilds from it.
	Source Source `json:"source"`
	// Spec is the host-side configuration.
	Spec spec.Spec `json:"spec"`
	// UUID identifies the container for its whole life; its init gets it
	// as container_uuid (systemd makes it the machine ID). Records written
	// before it existed have none; see cell's uuidOf.
	UUID string `json:"uuid,omitempty"`
	// LimitOverrides are the limits given on the command line; they
	// replace those of Spec (see Limits).
	LimitOverrides spec.LimitOverrides `json:"limitOverrides,omitzero"`
}

// Limits are the limits that take effect: the configuration's, with those
// given on the command line replacing them.
func (c *Container) Limits() spec.Limits {
	return c.Spec.Limits.With(c.LimitOverrides)
}

// Source is where a container's system comes from.
type Source struct {
	// ConfigFile is the absolute path of the configuration (for an inline
	// expression, the copy in the container's directory). Empty for a
	// prebuilt system.
	ConfigFile string `json:"configFile,omitempty"`
	// Inline is true when ConfigFile holds an expression given with -c.
	Inline bool `json:"inline,omitempty"`
	// SystemPath is a prebuilt system's store path.
	SystemPath string `json:"systemPath,omitempty"`
	// Flake is "REF#NAME" for a system from a flake.
	Flake string `json:"flake,omitempty"`
	// NixArgs are passed to every Nix call for this container.
	NixArgs []string `json:"nixArgs,omitempty"`
	// RootFS, instead of a NixOS system, is a plain directory tree that
	// is the container's root (create --rootfs), booted with Init. Such a
	// container has no Nix profile and no generations.
	RootFS string `json:"rootfs,omitempty"`
	// Init is the program run as PID 1 of a RootFS container, a path
	// inside it.
	Init string `json:"init,omitempty"`
}

// Store is one nixcell instance's state.
type Store struct {
	Root string // persistent state, e.g. /var/lib/nixcell
	Run  string // state that must not survive a reboot, e.g. /run/nixcell
	// CgroupParent is the cgroup under which this instance's containers
	// live, e.g. /nixcell.
	CgroupParent string
	// ID is "" for the default instance, else a short identifier derived
	// from Root that keeps host-wide names (cgroups, interfaces, nftables
	// tables) of isolated instances apart.
	ID string
}

// New returns the store rooted at root. The default root uses the default
// run directory and cgroup; any other gets its own, derived from its path,
// so instances never share running containers.
func New(root string) (Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return Store{}, err
	}
	if abs == DefaultRoot {
		return Store{Root: abs, Run: DefaultRun, CgroupParent: "/nixcell"}, nil
	}
	sum := sha256.Sum256([]byte(abs))
	id := hex.EncodeToString(sum[:4])
	return Store{Root: abs, Run: DefaultRun + "-" + id, CgroupParent: "/nixcell-" + id, ID: id}, nil
}

// Init creates the persistent directories and checks that container users
// can reach their roots below Root: their user IDs are not the host's
// root, so every directory above a root must be searchable by others. The
// run directory is made by the first start (SaveRuns) and goes when
// nothing of the instance is left (RemoveRunIfEmpty).
func (s Store) Init() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.Root, 0o711}, {s.containersDir(), 0o711}, {s.locksDir(), 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("creating state directory: %w", err)
		}
	}
	if err := s.writeRunDirFile(); err != nil {
		return err
	}
	for dir := s.containersDir(); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("state directory %s: %s has mode %04o, so container users cannot reach their root file systems below it; run chmod o+x %s",
				s.Root, dir, fi.Mode().Perm(), dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// RunDirFile names, in a non-default instance's state directory, its run
// directory, followed by a newline: how a program that does not hash the
// state directory's path (the exec early path, in C, before the Go
// runtime starts; see package runtime) finds it. The file is root's and
// no one else's.
const RunDirFile = "run-dir"

func (s Store) writeRunDirFile() error {
	if s.ID == "" {
		return nil
	}
	path, want := filepath.Join(s.Root, RunDirFile), s.Run+"\n"
	if got, err := os.ReadFile(path); err == nil && string(got) == want {
		return nil
	}
	return atomicfile.WriteFile(path, []byte(want), 0o600)
}

func (s Store) containersDir() string { return filepath.Join(s.Root, "containers") }
func (s Store) locksDir() string      { return filepath.Join(s.Root, "locks") }

// Dir is the container's state directory.
func (s Store) Dir(name string) string { return filepath.Join(s.containersDir(), name) }

// RootFS is the container's root file system.
func (s Store) RootFS(name string) string { return filepath.Join(s.Dir(name), "root") }

// ConsoleLog is where the container's console output is kept.
func (s Store) ConsoleLog(name string) string { return filepath.Join(s.Dir(name), "console.log") }

// DeviceDir holds the container's copies of its allowed device nodes.
func (s Store) DeviceDir(name string) string { return filepath.Join(s.Dir(name), "devices") }

// ClosureViewDir keeps the mount points of the container's closure store
// between starts (runtime.Container.ClosureViewDir).
func (s Store) ClosureViewDir(name string) string { return filepath.Join(s.Dir(name), "closure-view") }

// InlineConfig is where an inline (-c) configuration is kept.
func (s Store) InlineConfig(name string) string {
	return filepath.Join(s.Dir(name), "configuration.nix")
}

// ClosureCache holds the store closure of the system the container last
// booted with store = "closure" (a closure never changes, so it is
// computed once per system).
func (s Store) ClosureCache(name string) string { return filepath.Join(s.Dir(name), "closure.json") }

// BuildLink is the temporary GC root of a system being built.
func (s Store) BuildLink(name string) string { return filepath.Join(s.Dir(name), "build-result") }

// RuntimeRoot is libcontainer's state root.
func (s Store) RuntimeRoot() string { return filepath.Join(s.Run, "containers") }

// HostDir holds what the host provides a running container: the files
// bound at /run/host inside (the readiness socket among them) and the
// mount points of a composed root. It is recreated at every start and
// removed when the container stops; nothing is ever mounted there in the
// host's mount namespace.
func (s Store) HostDir(name string) string { return filepath.Join(s.Run, "host", name) }

// CgroupPath is the container's absolute cgroup path.
func (s Store) CgroupPath(name string) string { return s.CgroupParent + "/" + CgroupLeaf(name) }

// cgroupFiles are the files of a cgroup directory whose names are valid
// container names, or could become so (the others have a dot, as
// cgroup.procs and memory.max): cgroup v1's.
var cgroupFiles = map[string]bool{"tasks": true, "notify_on_release": true, "release_agent": true}

// CgroupLeaf is the name of the container's cgroup directory below the
// instance's: its name, with a "_" before it when a cgroup's own file has
// that name (a container named tasks gets _tasks), as systemd escapes
// unit names. Container names never start with "_", so the escaped ones
// stay apart.
func CgroupLeaf(name string) string {
	if cgroupFiles[name] || strings.HasPrefix(name, "_") {
		return "_" + name
	}
	return name
}

// ContainerOfCgroup is the container whose cgroup directory is leaf
// (CgroupLeaf's inverse).
func ContainerOfCgroup(leaf string) string {
	if name, ok := strings.CutPrefix(leaf, "_"); ok && CgroupLeaf(name) == leaf {
		return name
	}
	return leaf
}

// IDMapPath is the instance's own ID range allocation file of before ranges
// were host-wide; package idmap adopts its ranges and removes it.
func (s Store) IDMapPath() string { return filepath.Join(s.Root, "idmap.json") }

// NetworkPath is the network settings and address allocation file.
func (s Store) NetworkPath() string { return filepath.Join(s.Root, "network.json") }

// GlobalLockPath is the lock of instance-wide allocations. It is outside
// the locks directory, which holds only containers' locks: a container's
// name, whatever it is, never names one of nixcell's own files.
func (s Store) GlobalLockPath() string { return filepath.Join(s.Root, "global.lock") }

// CgroupParentLockPath is where starts claim the instance's cgroup parent
// while they make their cgroups in it (shared locks; removing it takes the
// exclusive one).
func (s Store) CgroupParentLockPath() string { return filepath.Join(s.Root, "cgroups.lock") }

// ContainerLockPath is the container's lock file.
func (s Store) ContainerLockPath(name string) string {
	return filepath.Join(s.locksDir(), name+".lock")
}

// Lock takes the container's lock, waiting until ctx ends. Every change to
// a container holds it, including create and destroy.
func (s Store) Lock(ctx context.Context, name string) (*lockfile.Handle, error) {
	h, err := lockfile.Lock(ctx, s.ContainerLockPath(name))
	if err != nil {
		return nil, fmt.Errorf("locking container %q: %w", name, err)
	}
	return h, nil
}

// Load reads the container's record.
func (s Store) Load(name string) (*Container, error) {
	var c Container
	path := filepath.Join(s.Dir(name), "container.json")
	err := atomicfile.ReadJSON(path, &c)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading record of %q: %w", name, err)
	}
	// Commands act on the record's name (Save writes to its directory): a
	// damaged or misplaced record must not make them act on another.
	if c.Name != name {
		return nil, fmt.Errorf("reading record of %q: %s is the record of %q; repair it", name, path, c.Name)
	}
	return &c, nil
}

// Save writes the container's record atomically, creating its directory.
// The caller holds the container's lock.
func (s Store) Save(c *Container) error {
	if err := os.MkdirAll(s.Dir(c.Name), 0o711); err != nil {
		return err
	}
	return atomicfile.WriteJSON(filepath.Join(s.Dir(c.Name), "container.json"), c, 0o600)
}

// Partial lists what commands on the container that were killed midway
// left in its directory: half-written files of its record, closure cache
// and inline configuration, an update's new inline configuration, a
// build's link to its result (a garbage collector root).
func (s Store) Partial(name string) []string {
	var found []string
	for _, f := range []string{"container.json", "closure.json", "configuration.nix", "configuration.nix.new"} {
		found = append(found, atomicfile.Leftovers(filepath.Join(s.Dir(name), f))...)
	}
	for _, f := range []string{s.InlineConfig(name) + ".new", s.BuildLink(name)} {
		if _, err := os.Lstat(f); err == nil {
			found = append(found, f)
		}
	}
	// A closure view a killed start was making.
	views, _ := filepath.Glob(filepath.Join(s.ClosureViewDir(name), ".tmp-*"))
	return append(found, views...)
}

// RemovePartial removes what Partial lists. Preconditions: the
// container's lock is held and its create finished (a command makes these
// only while it holds the lock).
func (s Store) RemovePartial(name string) error {
	for _, f := range s.Partial(name) {
		if err := os.RemoveAll(f); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the container's state directory, root included. The
// caller holds the container's lock and has stopped it.
//
// The console agent may still be finishing with a stopped init: its last
// output and its exit status land in the directory shortly after the stop
// (up to the agent's 5 s wait for the init to be reaped). A file it adds
// while the directory is being removed makes the removal fail with "not
// empty", so the removal is tried again; once the directory is gone the
// agent's writes fail harmlessly.
func (s Store) Remove(name string) error {
	var err error
	for deadline := time.Now().Add(6 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err = os.RemoveAll(s.Dir(name)); !errors.Is(err, syscall.ENOTEMPTY) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("removing state of %q: %w", name, err)
	}
	return nil
}

// RemoveRoot deletes the container's root file system and what its runtime
// made beside it (device copies, the closure view), keeping its record. The caller holds the
// container's lock and has stopped it.
func (s Store) RemoveRoot(name string) error {
	for _, d := range []string{s.RootFS(name), s.DeviceDir(name), s.ClosureViewDir(name)} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	return nil
}

// Names lists the containers that have a state directory, sorted.
func (s Store) Names() ([]string, error) {
	entries, err := os.ReadDir(s.containersDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && spec.ValidateName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}
