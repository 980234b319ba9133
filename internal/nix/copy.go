package nix

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/hostfs"
)

// Replicate gives the profile, which has no generation yet, the
// generations gens with their numbers, store paths and dates, and makes
// current the current one: a clone's profile is its source's, generation
// for generation. The links are made as nix-env makes them (each under a
// temporary name, then renamed), in the profile directory, which belongs
// to the host; being below /nix/var/nix/profiles, they are GC roots.
// Preconditions: the container's lock is held; the store paths are valid
// and kept alive meanwhile (by the source's profile).
func (p Profile) Replicate(gens []Generation, current int) error {
	if err := p.check(); err != nil {
		return err
	}
	dir, err := hostfs.Open(p.Dir(), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening profile %s: %w", p.Dir(), err)
	}
	defer dir.Close()
	if existing, err := p.Generations(); err != nil || len(existing) > 0 {
		return fmt.Errorf("profile %s already has generations", p.Dir())
	}
	found := false
	for _, g := range gens {
		if !strings.HasPrefix(g.System, StoreDir+"/") {
			return fmt.Errorf("generation %d is %q, not a store path", g.Number, g.System)
		}
		name := "system-" + strconv.Itoa(g.Number) + "-link"
		if err := linkAt(dir, name, g.System); err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(g.Date.UnixNano()), unix.NsecToTimespec(g.Date.UnixNano())}
		if err := unix.UtimesNanoAt(int(dir.Fd()), name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("dating generation %d: %w", g.Number, err)
		}
		found = found || g.Number == current
	}
	if !found {
		return fmt.Errorf("generation %d, to be current, is not among those given", current)
	}
	return linkAt(dir, "system", "system-"+strconv.Itoa(current)+"-link")
}

// linkAt makes name in dir a symbolic link to target, replacing it
// atomically.
func linkAt(dir *os.File, name, target string) error {
	tmp := ".tmp-" + name
	_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	if err := unix.Symlinkat(target, int(dir.Fd()), tmp); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Join(dir.Name(), name), err)
	}
	if err := unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name); err != nil {
		_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return fmt.Errorf("creating %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return nil
}

// AddRoot makes link, a path in a directory only the host can write, a
// garbage collector root of storePath: an indirect root, registered in
// /nix/var/nix/gcroots/auto as nix-build -o registers its result, which
// holds as long as link does (removing link drops it).
func AddRoot(ctx context.Context, storePath, link string) error {
	_, err := run(ctx, nil, "nix-store", "--realise", storePath, "--add-root", link, "--indirect")
	return err
}
