package idmap

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Allocation is one container's range in the registry.
type Allocation struct {
	// Instance is the state directory of the container's instance.
	Instance  string `json:"instance"`
	Container string `json:"container"`
	Range     Range  `json:"range"`
}

// procRoot is where Stale and Reclaim look for processes.
const procRoot = "/proc"

// Stale returns the allocations, of any instance on the host, that Reclaim
// would free: those of instances whose state directory no longer exists
// (removed without destroying its containers), none of whose IDs any
// process on the host runs as. It takes no lock.
//
// A state directory that exists keeps its ranges even when the container
// is missing from it: a state directory on an unmounted file system looks
// like that, and its containers come back when it is mounted.
func (a *Allocator) Stale() ([]Allocation, error) {
	reg, err := a.read()
	if err != nil {
		return nil, fmt.Errorf("listing stale ID ranges: %w", err)
	}
	stale, err := staleIn(reg)
	if err != nil {
		return nil, fmt.Errorf("listing stale ID ranges: %w", err)
	}
	return stale, nil
}

// Reclaim frees the allocations Stale lists, under the registry's lock,
// and returns them. Nothing else ever frees them: Allocate never does, so
// an instance is never robbed of its ranges behind its back; `nixcell
// doctor --fix` is the caller it is meant for.
func (a *Allocator) Reclaim(ctx context.Context) ([]Allocation, error) {
	var stale []Allocation
	err := a.change(ctx, func(reg *registry) (bool, error) {
		var err error
		if stale, err = staleIn(reg); err != nil {
			return false, err
		}
		for _, s := range stale {
			in := reg.Instances[s.Instance]
			delete(in.Ranges, s.Container)
			delete(in.Conflicts, s.Container)
		}
		return len(stale) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reclaiming stale ID ranges: %w", err)
	}
	return stale, nil
}

// staleIn lists the stale allocations of reg, sorted by range.
func staleIn(reg *registry) ([]Allocation, error) {
	var gone []Allocation
	for dir, in := range reg.Instances {
		_, err := os.Lstat(dir)
		if err == nil {
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checking state directory of instance %s: %w", dir, err)
		}
		for name, r := range in.Ranges {
			gone = append(gone, Allocation{dir, name, r})
		}
		for name, c := range in.Conflicts {
			gone = append(gone, Allocation{dir, name, c.Range})
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	ids, err := processIDs(procRoot)
	if err != nil {
		return nil, err
	}
	var stale []Allocation
	for _, s := range gone {
		if !slices.ContainsFunc(ids, s.Range.Contains) {
			stale = append(stale, s)
		}
	}
	slices.SortFunc(stale, func(x, y Allocation) int {
		return cmp.Or(cmp.Compare(x.Range.Start, y.Range.Start), cmp.Compare(x.Instance, y.Instance), cmp.Compare(x.Container, y.Container))
	})
	return stale, nil
}

// processIDs returns every user and group ID (real, effective, saved, file
// system and supplementary) of every process under the proc file system at root.
func processIDs(root string) ([]uint32, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var ids []uint32
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, e.Name(), "status"))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // it exited meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("reading IDs of process %s: %w", e.Name(), err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			key, values, _ := strings.Cut(sc.Text(), ":")
			if key != "Uid" && key != "Gid" && key != "Groups" {
				continue
			}
			for _, f := range strings.Fields(values) {
				id, err := strconv.ParseUint(f, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("process %s has %s %q", e.Name(), key, f)
				}
				ids = append(ids, uint32(id))
			}
		}
	}
	return ids, nil
}
