package idmap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
)

// DefaultRegistryPath is the host-wide registry of ranges. It is under
// /var/lib because ranges must outlive reboots (the containers' files on
// disk belong to them), and in a directory of its own, beside the default
// instance's /var/lib/nixcell rather than in it, because it belongs to no
// instance: removing an instance's state directory must not lose the ranges
// of the others.
const DefaultRegistryPath = "/var/lib/nixcell-ids/ranges.json"

// ErrConflict is matched (errors.Is) when a container's range, adopted from
// its instance's allocation file of before ranges were host-wide, overlaps
// a range another container holds. The container must be destroyed and
// created again to get a range of its own.
var ErrConflict = errors.New("ID range shared with another container")

// Config says whose ranges an Allocator manages, where the host-wide
// registry is and where the subid files are.
type Config struct {
	// Instance is the owner of the ranges: the instance's state directory,
	// an absolute clean path. Containers are named within it, so two
	// instances' "web" hold different ranges. Required.
	Instance string
	// RegistryPath is the host-wide registry (see registry), created on
	// the first allocation (with its directory, mode 0700); its lock is
	// the file beside it named like it with ".lock" for ".json". Empty
	// means DefaultRegistryPath, which every instance on the host must
	// share: only tests give another.
	RegistryPath string
	// LegacyPath is the instance's own allocation file of before ranges
	// were host-wide, {"ranges": {NAME: RANGE}}. If it exists, its ranges
	// are adopted into the registry on the Allocator's first use, and it
	// is removed. Empty: there is none.
	LegacyPath string
	// SubUIDPath and SubGIDPath are the subuid(5) and subgid(5) files;
	// empty means /etc/subuid and /etc/subgid. A missing file counts as
	// empty. They are read on every Allocate, so edits apply at once.
	SubUIDPath string
	SubGIDPath string
}

// Allocator hands out and frees the ranges of one instance's containers,
// from the pool all instances on the host share. It holds no state in
// memory, so any number of Allocators, in any number of processes, can
// share one registry: every change is a read-modify-write under the
// registry's lock.
type Allocator struct {
	cfg      Config
	lockPath string
}

// registry is the content of Config.RegistryPath, the ranges of every
// instance on the host by instance, then container:
//
//	{"instances": {"/var/lib/nixcell": {"ranges": {"web": {"start": 1048576, "size": 65536}}}}}
//
// It is only ever replaced whole (atomicfile), so reading it without the
// lock gives a consistent, if possibly stale, view. An instance with no
// ranges and no conflicts has no entry.
type registry struct {
	Instances map[string]*instance `json:"instances"`
}

// instance is one instance's part of the registry.
type instance struct {
	Ranges map[string]Range `json:"ranges"`
	// Conflicts are ranges adopted from the instance's legacy file that
	// overlapped one held already. They are kept from new allocations
	// (the container's files still belong to them) until released.
	Conflicts map[string]conflict `json:"conflicts,omitempty"`
}

// conflict is a range its container must give up, and who else holds it.
type conflict struct {
	Range     Range  `json:"range"`
	Instance  string `json:"heldByInstance"`
	Container string `json:"heldByContainer"`
}

// New returns an Allocator for cfg. It touches nothing on disk.
func New(cfg Config) *Allocator {
	if cfg.RegistryPath == "" {
		cfg.RegistryPath = DefaultRegistryPath
	}
	if cfg.SubUIDPath == "" {
		cfg.SubUIDPath = "/etc/subuid"
	}
	if cfg.SubGIDPath == "" {
		cfg.SubGIDPath = "/etc/subgid"
	}
	lockPath := strings.TrimSuffix(cfg.RegistryPath, ".json") + ".lock"
	return &Allocator{cfg: cfg, lockPath: lockPath}
}

// Allocate returns the range of the instance's container name, allocating
// the lowest range that no container of any instance holds if it has none
// yet. Calling it again returns the same range, so a create that was
// killed after allocating reuses it when rerun. When the pool has no free
// range, the error matches ErrExhausted; when the container's adopted range
// is shared, ErrConflict. It waits for the registry's lock until ctx ends.
func (a *Allocator) Allocate(ctx context.Context, name string) (Range, error) {
	r, err := a.allocate(ctx, name)
	if err != nil {
		return Range{}, fmt.Errorf("allocating ID range for %q: %w", name, err)
	}
	return r, nil
}

func (a *Allocator) allocate(ctx context.Context, name string) (Range, error) {
	if name == "" {
		return Range{}, errors.New("empty container name")
	}
	var r Range
	err := a.change(ctx, func(reg *registry) (bool, error) {
		in := reg.Instances[a.cfg.Instance]
		if in != nil {
			if c, ok := in.Conflicts[name]; ok {
				return false, a.conflictError(name, c)
			}
			var ok bool
			if r, ok = in.Ranges[name]; ok {
				return false, nil
			}
		}
		p, err := a.pool()
		if err != nil {
			return false, err
		}
		var ok bool
		if r, ok = p.pick(reg.held()); !ok {
			return false, fmt.Errorf("%w in %s (every nixcell instance on this host takes its ranges from it, as %s records)",
				ErrExhausted, p.describe(a.cfg.SubUIDPath, a.cfg.SubGIDPath), a.cfg.RegistryPath)
		}
		reg.instance(a.cfg.Instance).Ranges[name] = r
		return true, nil
	})
	return r, err
}

// Release frees the range of the instance's container name, or forgets its
// conflict. Releasing a name that has no range is not an error, so a
// destroy can be rerun.
func (a *Allocator) Release(ctx context.Context, name string) error {
	err := a.change(ctx, func(reg *registry) (bool, error) {
		in := reg.Instances[a.cfg.Instance]
		if in == nil {
			return false, nil
		}
		_, held := in.Ranges[name]
		_, conflicting := in.Conflicts[name]
		delete(in.Ranges, name)
		delete(in.Conflicts, name)
		return held || conflicting, nil
	})
	if err != nil {
		return fmt.Errorf("releasing ID range of %q: %w", name, err)
	}
	return nil
}

// Lookup returns the range of the instance's container name; ok is false
// if it has none. The error matches ErrConflict if its range is shared. It
// takes the lock only to adopt the legacy file: the answer may be stale by
// the time it returns.
func (a *Allocator) Lookup(name string) (r Range, ok bool, err error) {
	in, err := a.own()
	if err != nil {
		return Range{}, false, fmt.Errorf("looking up ID range of %q: %w", name, err)
	}
	if c, conflicting := in.Conflicts[name]; conflicting {
		return Range{}, false, fmt.Errorf("looking up ID range of %q: %w", name, a.conflictError(name, c))
	}
	r, ok = in.Ranges[name]
	return r, ok, nil
}

// All returns every range the instance's containers hold, by container name
// (never nil); containers whose range is shared (ErrConflict) are not in
// it. It takes no lock, like Lookup.
func (a *Allocator) All() (map[string]Range, error) {
	in, err := a.own()
	if err != nil {
		return nil, fmt.Errorf("listing ID ranges: %w", err)
	}
	return in.Ranges, nil
}

// own returns the instance's part of the registry (never nil, nor its
// Ranges), adopting the legacy file first if there is one.
func (a *Allocator) own() (*instance, error) {
	if err := a.checkInstance(); err != nil {
		return nil, err
	}
	if a.hasLegacy() {
		ctx, cancel := context.WithTimeout(context.Background(), adoptWait)
		defer cancel()
		if err := a.change(ctx, func(*registry) (bool, error) { return false, nil }); err != nil {
			return nil, err
		}
	}
	reg, err := a.read()
	if err != nil {
		return nil, err
	}
	if in := reg.Instances[a.cfg.Instance]; in != nil {
		return in, nil
	}
	return &instance{Ranges: map[string]Range{}}, nil
}

// change runs fn on the registry under its lock, after adopting the legacy
// file, and writes the registry if fn or the adoption changed it.
func (a *Allocator) change(ctx context.Context, fn func(*registry) (changed bool, err error)) error {
	if err := a.checkInstance(); err != nil {
		return err
	}
	l, err := lockfile.Lock(ctx, a.lockPath)
	if err != nil {
		return err
	}
	defer l.Unlock()
	// What a write killed before its rename left (every writer holds the
	// lock).
	if err := atomicfile.RemoveLeftovers(a.cfg.RegistryPath); err != nil {
		return err
	}

	reg, err := a.read()
	if err != nil {
		return err
	}
	adopted, err := a.adoptLocked(reg)
	if err != nil {
		return err
	}
	// fn changes nothing when it fails, but what was adopted is written
	// even then.
	changed, fnErr := fn(reg)
	if changed || adopted {
		if err := a.writeLocked(reg); err != nil {
			return err
		}
	}
	if adopted {
		if err := os.Remove(a.cfg.LegacyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s, whose ranges are now in %s: %w", a.cfg.LegacyPath, a.cfg.RegistryPath, err)
		}
	}
	return fnErr
}

func (a *Allocator) checkInstance() error {
	if !filepath.IsAbs(a.cfg.Instance) || filepath.Clean(a.cfg.Instance) != a.cfg.Instance {
		return fmt.Errorf("instance %q is not an absolute clean path", a.cfg.Instance)
	}
	return nil
}

func (a *Allocator) conflictError(name string, c conflict) error {
	return fmt.Errorf("%w: its range %s, adopted from the instance's own allocation file of before ranges were host-wide, is also held by container %q of instance %s; "+
		"destroy %q and create it again to give it a range of its own (nixcell --state-dir %s destroy %s)",
		ErrConflict, c.Range, c.Container, c.Instance, name, a.cfg.Instance, name)
}

// held returns every range the registry keeps from new allocations: those
// containers hold, and those of conflicts.
func (reg *registry) held() []Range {
	var used []Range
	for _, in := range reg.Instances {
		used = slices.AppendSeq(used, maps.Values(in.Ranges))
		for _, c := range in.Conflicts {
			used = append(used, c.Range)
		}
	}
	return used
}

// instance returns the named instance's part, creating it.
func (reg *registry) instance(dir string) *instance {
	in := reg.Instances[dir]
	if in == nil {
		in = &instance{Ranges: map[string]Range{}}
		reg.Instances[dir] = in
	}
	return in
}

// read loads the registry; a missing file is an empty registry.
func (a *Allocator) read() (*registry, error) {
	reg := &registry{}
	err := atomicfile.ReadJSON(a.cfg.RegistryPath, reg)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if reg.Instances == nil {
		reg.Instances = map[string]*instance{}
	}
	for dir, in := range reg.Instances {
		if in == nil {
			delete(reg.Instances, dir)
			continue
		}
		if in.Ranges == nil {
			in.Ranges = map[string]Range{}
		}
	}
	return reg, nil
}

// writeLocked replaces the registry, leaving out instances that hold
// nothing.
//
// Preconditions: the registry's lock is held.
func (a *Allocator) writeLocked(reg *registry) error {
	for dir, in := range reg.Instances {
		if len(in.Ranges) == 0 && len(in.Conflicts) == 0 {
			delete(reg.Instances, dir)
		}
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.RegistryPath), 0o700); err != nil {
		return fmt.Errorf("creating directory for %s: %w", a.cfg.RegistryPath, err)
	}
	return atomicfile.WriteJSON(a.cfg.RegistryPath, reg, 0o600)
}

// pool reads the subid files and computes the pool.
func (a *Allocator) pool() (pool, error) {
	subuid, err := readSubIDs(a.cfg.SubUIDPath)
	if err != nil {
		return pool{}, err
	}
	subgid, err := readSubIDs(a.cfg.SubGIDPath)
	if err != nil {
		return pool{}, err
	}
	return newPool(subuid, subgid), nil
}

func readSubIDs(path string) ([]subID, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseSubIDs(path, data)
}
