package idmap

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
)

// adoptWait bounds how long Lookup and All, which take no context, wait for
// the registry's lock when they have a legacy file to adopt.
const adoptWait = time.Minute

// legacy is the content of Config.LegacyPath, each instance's own
// allocation file of before ranges were host-wide.
type legacy struct {
	Ranges map[string]Range `json:"ranges"`
}

// hasLegacy tells whether the instance may have a legacy file to adopt. It
// says yes when it cannot tell, so that adoptLocked reports the error.
func (a *Allocator) hasLegacy() bool {
	if a.cfg.LegacyPath == "" {
		return false
	}
	_, err := os.Lstat(a.cfg.LegacyPath)
	return !errors.Is(err, fs.ErrNotExist)
}

// adoptLocked moves the ranges of the instance's legacy file into reg, and
// reports whether there was a file to adopt; the caller writes reg and
// then removes the file. Each instance allocated on its own before, so two
// instances' files may hold overlapping ranges: the first adopted keeps
// its range, and a later one that overlaps becomes a conflict, which its
// container reports (ErrConflict) until it is destroyed. A container that
// holds a range in the registry already keeps that one.
//
// Preconditions: the registry's lock is held.
func (a *Allocator) adoptLocked(reg *registry) (bool, error) {
	if a.cfg.LegacyPath == "" {
		return false, nil
	}
	var old legacy
	err := atomicfile.ReadJSON(a.cfg.LegacyPath, &old)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("adopting the ID ranges of %s into %s: %w; repair the file, or remove it and recreate the containers of %s",
			a.cfg.LegacyPath, a.cfg.RegistryPath, err, a.cfg.Instance)
	}
	in := reg.instance(a.cfg.Instance)
	for _, name := range slices.Sorted(maps.Keys(old.Ranges)) {
		r := old.Ranges[name]
		if r.Size == 0 || r.End() > 1<<32 {
			return false, fmt.Errorf("adopting the ID ranges of %s: %q has the invalid range %d+%d; repair the file", a.cfg.LegacyPath, name, r.Start, r.Size)
		}
		if _, ok := in.Ranges[name]; ok {
			continue
		}
		if _, ok := in.Conflicts[name]; ok {
			continue
		}
		if holder, container, ok := reg.holder(r); ok {
			if in.Conflicts == nil {
				in.Conflicts = map[string]conflict{}
			}
			in.Conflicts[name] = conflict{Range: r, Instance: holder, Container: container}
			continue
		}
		in.Ranges[name] = r
	}
	return true, nil
}

// holder returns the container, and its instance, that holds a range
// overlapping r (the lowest such range), or keeps it as a conflict.
func (reg *registry) holder(r Range) (instance, container string, ok bool) {
	type holding struct {
		instance, container string
		r                   Range
	}
	var found []holding
	for dir, in := range reg.Instances {
		for name, h := range in.Ranges {
			found = append(found, holding{dir, name, h})
		}
		for name, c := range in.Conflicts {
			found = append(found, holding{dir, name, c.Range})
		}
	}
	var best *holding
	for i, h := range found {
		if h.r.End() > uint64(r.Start) && r.End() > uint64(h.r.Start) {
			if best == nil || cmp.Or(cmp.Compare(h.r.Start, best.r.Start), cmp.Compare(h.instance, best.instance), cmp.Compare(h.container, best.container)) < 0 {
				best = &found[i]
			}
		}
	}
	if best == nil {
		return "", "", false
	}
	return best.instance, best.container, true
}
