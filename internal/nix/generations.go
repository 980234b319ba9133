package nix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/fault"
)

// Generation is one generation of a profile.
type Generation struct {
	Number int       `json:"number"`
	Date   time.Time `json:"date"` // when it was made: the link's modification time, as nix-env shows it
	System string    `json:"system"`
}

// Generations lists the profile's generations, oldest first. It reads the
// profile's links directly, as nix-env --list-generations does.
func (p Profile) Generations() ([]Generation, error) {
	entries, err := os.ReadDir(p.Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var gens []Generation
	for _, e := range entries {
		m := generationLink.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		link := filepath.Join(p.Dir(), e.Name())
		fi, err := os.Lstat(link)
		if err != nil {
			return nil, err
		}
		target, err := os.Readlink(link)
		if err != nil {
			return nil, err
		}
		gens = append(gens, Generation{Number: n, Date: fi.ModTime(), System: target})
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Number < gens[j].Number })
	return gens, nil
}

// SwitchTo makes generation n the current one, as nix-env --switch-generation.
func (p Profile) SwitchTo(ctx context.Context, n int) error {
	return p.nixEnv(ctx, "--switch-generation", strconv.Itoa(n))
}

// Delete removes the listed generations, as nix-env --delete-generations.
// The caller has made sure that none of them is current.
func (p Profile) Delete(ctx context.Context, numbers []int) error {
	if len(numbers) == 0 {
		return nil
	}
	args := []string{"--delete-generations"}
	for _, n := range numbers {
		args = append(args, strconv.Itoa(n))
	}
	return p.nixEnv(ctx, args...)
}

// ErrBadGenerations is the class of unreadable generation selections.
var ErrBadGenerations = fault.New(fault.Invalid, "bad generation selection")

// SelectForDeletion resolves nix-env's --delete-generations forms against
// gens: generation numbers ("3 4"), "old" (all but the current), "+N" (the
// current and the N-1 before it stay, and any newer than the current) and "Nd" (made more than N days before now, except the
// newest of those, which was current at that time). The current generation
// is never selected; an explicit number that does not exist or is current
// is an error, so nothing is deleted by surprise.
func SelectForDeletion(gens []Generation, current int, args []string, now time.Time) ([]int, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: give generation numbers, old, +N or Nd", ErrBadGenerations)
	}
	exists := map[int]bool{}
	for _, g := range gens {
		exists[g.Number] = true
	}
	selected := map[int]bool{}
	keep := func(g Generation) bool { return g.Number == current }
	for _, a := range args {
		switch {
		case a == "old":
			for _, g := range gens {
				if !keep(g) {
					selected[g.Number] = true
				}
			}
		case strings.HasPrefix(a, "+"):
			n, err := strconv.Atoi(a[1:])
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%w: %q: +N needs a positive number", ErrBadGenerations, a)
			}
			// As nix-env: generations newer than the current one stay;
			// the current one and the N-1 before it stay; older go.
			seenCurrent := false
			for i := len(gens) - 1; i >= 0; i-- {
				switch {
				case keep(gens[i]):
					seenCurrent = true
					n--
				case !seenCurrent:
				case n > 0:
					n--
				default:
					selected[gens[i].Number] = true
				}
			}
		case strings.HasSuffix(a, "d"):
			days, err := strconv.Atoi(strings.TrimSuffix(a, "d"))
			if err != nil || days < 0 {
				return nil, fmt.Errorf("%w: %q: Nd needs a number of days", ErrBadGenerations, a)
			}
			// A time.Duration holds 292 years: more days would wrap it
			// (and select young generations); nothing is that old.
			if days > int(math.MaxInt64/int64(24*time.Hour)) {
				break
			}
			cutoff := now.Add(-time.Duration(days) * 24 * time.Hour)
			var older []Generation
			for _, g := range gens {
				if g.Date.Before(cutoff) {
					older = append(older, g)
				}
			}
			// The newest generation older than the cutoff was the one in use
			// at the cutoff; nix-env keeps it too.
			for i := 0; i+1 < len(older); i++ {
				if !keep(older[i]) {
					selected[older[i].Number] = true
				}
			}
		default:
			n, err := strconv.Atoi(a)
			if err != nil {
				return nil, fmt.Errorf("%w: %q is not a generation number, old, +N or Nd", ErrBadGenerations, a)
			}
			if !exists[n] {
				return nil, fmt.Errorf("%w: there is no generation %d", ErrBadGenerations, n)
			}
			if n == current {
				return nil, fmt.Errorf("%w: generation %d is the current one; switch to another first", ErrBadGenerations, n)
			}
			selected[n] = true
		}
	}
	var out []int
	for n := range selected {
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}
