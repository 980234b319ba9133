package nix

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzSelectForDeletion: the generation selector of delete-generations
// selects only generations that exist and are not current, or fails with
// ErrBadGenerations. gens holds pairs of bytes: a generation's number and
// its age in days; args are the command's arguments, split at spaces.
// Each form selects what it says: old all but the current one, +N none of
// the N newest up to the current one nor any newer, Nd only generations
// made more than N days ago.
func FuzzSelectForDeletion(f *testing.F) {
	f.Add([]byte{1, 40, 2, 35, 3, 20, 5, 10, 6, 1, 7, 0}, 7, "old")
	f.Add([]byte{1, 40, 2, 35, 3, 20, 5, 10, 6, 1, 7, 0}, 5, "+2")
	f.Add([]byte{1, 40, 2, 35, 3, 20, 5, 10, 6, 1, 7, 0}, 7, "30d 2")
	f.Add([]byte{1, 40, 2, 35, 3, 20}, 2, "15d")
	f.Add([]byte{1, 0, 2, 0}, 0, "old")
	f.Add([]byte{1, 3}, 1, "1")
	f.Add([]byte{1, 3, 2, 1}, 2, "+0 x -1d xd 4 +")
	f.Add([]byte{}, 0, "")
	f.Fuzz(func(t *testing.T, data []byte, current int, argLine string) {
		now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
		var gens []Generation
		exists := map[int]bool{}
		for i := 0; i+1 < len(data); i += 2 {
			n := int(data[i]) + 1
			if !exists[n] {
				exists[n] = true
				gens = append(gens, Generation{Number: n, Date: now.AddDate(0, 0, -int(data[i+1]))})
			}
		}
		slices.SortFunc(gens, func(a, b Generation) int { return a.Number - b.Number })
		args := strings.Fields(argLine)
		selected, err := SelectForDeletion(gens, current, args, now)
		if err != nil {
			if !errors.Is(err, ErrBadGenerations) {
				t.Fatalf("SelectForDeletion(%v) = %v, not an ErrBadGenerations", args, err)
			}
			return
		}
		if !slices.IsSorted(selected) || len(slices.Compact(slices.Clone(selected))) != len(selected) {
			t.Fatalf("SelectForDeletion(%v) = %v: not sorted and unique", args, selected)
		}
		chosen := map[int]bool{}
		for _, n := range selected {
			if !exists[n] || n == current {
				t.Fatalf("SelectForDeletion(%v) with current %d selected %d, which does not exist or is current", args, current, n)
			}
			chosen[n] = true
		}
		// Each argument on its own selects a part of what all select, and
		// what it selects is what it says.
		for _, a := range args {
			alone, err := SelectForDeletion(gens, current, []string{a}, now)
			if err != nil {
				t.Fatalf("%v succeeded, %q alone fails: %v", args, a, err)
			}
			for _, n := range alone {
				if !chosen[n] {
					t.Fatalf("%q alone selects %d, %v does not", a, n, args)
				}
			}
			switch {
			case a == "old":
				if len(alone) != len(gens)-btoi(exists[current]) {
					t.Fatalf("old with current %d selected %v of %v", current, alone, gens)
				}
			case strings.HasPrefix(a, "+"):
				keep, _ := strconv.Atoi(a[1:])
				for _, n := range alone {
					if n > current {
						t.Fatalf("%s with current %d selected the newer generation %d", a, current, n)
					}
					newer := 0 // generations from n up to the current one, n excluded
					for _, g := range gens {
						if g.Number > n && g.Number <= current {
							newer++
						}
					}
					if exists[current] && newer < keep {
						t.Fatalf("%s with current %d selected %d, one of the %d newest", a, current, n, keep)
					}
				}
			case strings.HasSuffix(a, "d"):
				days, _ := strconv.Atoi(strings.TrimSuffix(a, "d"))
				for _, n := range alone {
					i := slices.IndexFunc(gens, func(g Generation) bool { return g.Number == n })
					if age := now.Sub(gens[i].Date); age/(24*time.Hour) < time.Duration(min(days, 1<<20)) {
						t.Fatalf("%s selected generation %d, made %v ago", a, n, age)
					}
				}
			}
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
