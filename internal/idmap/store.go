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

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
)

// Config says where an Allocator keeps its state and finds the subid files.
type Config struct {
	// StatePath is the JSON file that holds the allocations,
	// {"ranges": {NAME: {"start": N, "size": 65536}}}, created on the first
	// allocation (with its directory, mode 0700). Required.
	StatePath string
	// LockPath is nixcell's global allocation lock, held for every change
	// of StatePath. Required.
	LockPath string
	// SubUIDPath and SubGIDPath are the subuid(5) and subgid(5) files;
	// empty means /etc/subuid and /etc/subgid. A missing file counts as
	// empty. They are read on every Allocate, so edits apply at once.
	SubUIDPath string
	SubGIDPath string
}

// Allocator hands out and frees ranges. It holds no state in memory, so any
// number of Allocators, in any number of processes, can share one
// StatePath: every change is a read-modify-write under LockPath.
type Allocator struct {
	cfg Config
}

// state is the content of Config.StatePath:
//
//	{"ranges": {"web": {"start": 1048576, "size": 65536}, ...}}
//
// It is only ever replaced whole (atomicfile), so reading it without the
// lock gives a consistent, if possibly stale, view.
type state struct {
	Ranges map[string]Range `json:"ranges"`
}

// New returns an Allocator for cfg. It touches nothing on disk.
func New(cfg Config) *Allocator {
	if cfg.SubUIDPath == "" {
		cfg.SubUIDPath = "/etc/subuid"
	}
	if cfg.SubGIDPath == "" {
		cfg.SubGIDPath = "/etc/subgid"
	}
	return &Allocator{cfg: cfg}
}

// Allocate returns the range of the container name, allocating the lowest
// free one if it has none yet. Calling it again returns the same range, so
// a create that was killed after allocating reuses it when rerun. When the
// pool has no free range, the error matches ErrExhausted. It waits for the
// allocation lock until ctx ends.
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
	l, err := lockfile.Lock(ctx, a.cfg.LockPath)
	if err != nil {
		return Range{}, err
	}
	defer l.Unlock()

	st, err := a.read()
	if err != nil {
		return Range{}, err
	}
	if r, ok := st.Ranges[name]; ok {
		return r, nil
	}
	p, err := a.pool()
	if err != nil {
		return Range{}, err
	}
	r, ok := p.pick(slices.Collect(maps.Values(st.Ranges)))
	if !ok {
		return Range{}, fmt.Errorf("%w in %s", ErrExhausted, p.describe(a.cfg.SubUIDPath, a.cfg.SubGIDPath))
	}
	st.Ranges[name] = r
	if err := a.writeLocked(st); err != nil {
		return Range{}, err
	}
	return r, nil
}

// Release frees the range of the container name. Releasing a name that has
// no range is not an error, so a destroy can be rerun.
func (a *Allocator) Release(ctx context.Context, name string) error {
	if err := a.release(ctx, name); err != nil {
		return fmt.Errorf("releasing ID range of %q: %w", name, err)
	}
	return nil
}

func (a *Allocator) release(ctx context.Context, name string) error {
	l, err := lockfile.Lock(ctx, a.cfg.LockPath)
	if err != nil {
		return err
	}
	defer l.Unlock()

	st, err := a.read()
	if err != nil {
		return err
	}
	if _, ok := st.Ranges[name]; !ok {
		return nil
	}
	delete(st.Ranges, name)
	return a.writeLocked(st)
}

// Lookup returns the range of the container name; ok is false if it has
// none. It takes no lock: the answer may be stale by the time it returns.
func (a *Allocator) Lookup(name string) (r Range, ok bool, err error) {
	st, err := a.read()
	if err != nil {
		return Range{}, false, fmt.Errorf("looking up ID range of %q: %w", name, err)
	}
	r, ok = st.Ranges[name]
	return r, ok, nil
}

// All returns every allocated range by container name (never nil). It
// takes no lock, like Lookup.
func (a *Allocator) All() (map[string]Range, error) {
	st, err := a.read()
	if err != nil {
		return nil, fmt.Errorf("listing ID ranges: %w", err)
	}
	return st.Ranges, nil
}

// read loads the state; a missing file is an empty state.
func (a *Allocator) read() (state, error) {
	var st state
	err := atomicfile.ReadJSON(a.cfg.StatePath, &st)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return state{}, err
	}
	if st.Ranges == nil {
		st.Ranges = make(map[string]Range)
	}
	return st, nil
}

// writeLocked replaces the state.
//
// Preconditions: the allocation lock is held.
func (a *Allocator) writeLocked(st state) error {
	if err := os.MkdirAll(filepath.Dir(a.cfg.StatePath), 0o700); err != nil {
		return fmt.Errorf("creating directory for %s: %w", a.cfg.StatePath, err)
	}
	return atomicfile.WriteJSON(a.cfg.StatePath, st, 0o600)
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
