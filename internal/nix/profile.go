package nix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/nixcell/nixcell/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Where nixos-container keeps per-container profiles and GC roots.
const (
	ProfilesDir = "/nix/var/nix/profiles/per-container"
	GCRootsDir  = "/nix/var/nix/gcroots/per-container"
)

// Profile is one container's Nix profile directory. On disk:
//
//	ProfilesDir/NAME/system              -> system-N-link (the current generation)
//	ProfilesDir/NAME/system-N-link       -> /nix/store/...-nixos-system-NAME-...
//	ProfilesDir/NAME/system.lock         nix-env's lock of the profile
//	ProfilesDir/NAME/per-user/           an empty mount point
//	GCRootsDir/NAME/                     the container's own GC roots
//	GCRootsDir/NAME/per-user-profiles/   the container's own user profiles
//
// The profile directory belongs to the host: nix-env, the garbage
// collector and nixcell act on it as the host's root, so the container
// sees it read-only at /nix/var/nix/profiles; a link or lock file the
// container could plant there would turn their writes elsewhere. What the
// container manages itself is in GCRootsDir/NAME, owned by its root: its GC
// roots at /nix/var/nix/gcroots and its users' profiles (nix-env -p
// /nix/var/nix/profiles/per-user/root/profile ...) at
// /nix/var/nix/profiles/per-user. Being below the GC roots, those profiles
// keep their store paths alive, as they do under nixos-container; the
// garbage collector only reads there.
type Profile struct {
	Name string
}

// Dir is the host directory mounted at /nix/var/nix/profiles inside.
func (p Profile) Dir() string { return filepath.Join(ProfilesDir, p.Name) }

// GCRootsDir is the host directory mounted at /nix/var/nix/gcroots inside.
func (p Profile) GCRootsDir() string { return filepath.Join(GCRootsDir, p.Name) }

// UserProfilesDir is the host directory mounted at
// /nix/var/nix/profiles/per-user inside.
func (p Profile) UserProfilesDir() string { return filepath.Join(p.GCRootsDir(), "per-user-profiles") }

// System is the profile's link to the current generation.
func (p Profile) System() string { return filepath.Join(p.Dir(), "system") }

// Ensure creates the profile and the container's own directories, the
// latter owned by uid (the container's root on the host), and closes
// ProfilesDir and GCRootsDir to everyone but root, so that host users never
// reach what a container wrote. Paths inside GCRootsDir/NAME, which the
// container writes, are resolved without following links.
func (p Profile) Ensure(uid int) error {
	for _, d := range []string{ProfilesDir, GCRootsDir} {
		if err := hostfs.MkdirAll(d, 0o755, 0, 0); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("closing %s to other users: %w", d, err)
		}
	}
	if err := hostfs.MkdirAll(filepath.Join(p.Dir(), "per-user"), 0o755, 0, 0); err != nil {
		return fmt.Errorf("creating profile %s: %w", p.Dir(), err)
	}
	if err := hostfs.MkdirAll(p.UserProfilesDir(), 0o755, uid, uid); err != nil {
		return fmt.Errorf("creating the container's directories: %w (the container made it, as /nix/var/nix/gcroots/%s inside; remove it there or on the host, and nixcell makes the directory again)",
			err, filepath.Base(p.UserProfilesDir()))
	}
	// Made by earlier versions owned by the host's root.
	for _, d := range []string{p.GCRootsDir(), p.UserProfilesDir()} {
		f, err := hostfs.Open(d, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = f.Chown(uid, uid)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ErrProfileTaken is the error of Claim when the profile directory exists.
var ErrProfileTaken = errors.New("a Nix profile of that name exists")

// Claim creates the profile directory, failing with ErrProfileTaken if it
// exists: profiles are named host-wide, so of two creates of one name in
// two state directories at once only one may have it. (mkdir is the
// atomic test; a check before it is not.)
func (p Profile) Claim() error {
	if err := hostfs.MkdirAll(ProfilesDir, 0o700, 0, 0); err != nil {
		return fmt.Errorf("creating %s: %w", ProfilesDir, err)
	}
	err := unix.Mkdir(p.Dir(), 0o755)
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: %s", ErrProfileTaken, p.Dir())
	}
	if err != nil {
		return fmt.Errorf("creating profile %s: %w", p.Dir(), err)
	}
	return nil
}

// nixEnvTimeout bounds every nix-env call on a profile: it waits for the
// profile's lock, which only another Nix command can hold.
const nixEnvTimeout = 2 * time.Minute

// nixEnv runs nix-env on the profile once it is safe to (see check).
func (p Profile) nixEnv(ctx context.Context, args ...string) error {
	if err := p.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, nixEnvTimeout)
	defer cancel()
	_, err := run(ctx, nil, "nix-env", append([]string{"-p", p.System()}, args...)...)
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("nix-env on %s did not finish in %v (is another Nix command holding %s.lock?): %w", p.Dir(), nixEnvTimeout, p.System(), err)
	}
	return err
}

// check makes sure that the profile directory holds only what nix-env and
// nixcell put there, before nix-env opens files in it. Containers made by
// earlier versions of nixcell could write there; a symbolic link or other
// file of theirs is refused, naming it. A non-empty lock file is one Nix
// marked as deleted (whoever locks it would retry for ever): it goes.
func (p Profile) check() error {
	dir, err := hostfs.Open(p.Dir(), unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		kind := st.Mode & unix.S_IFMT
		switch {
		case (name == "system" || generationLink.MatchString(name)) && kind == unix.S_IFLNK:
		case name == "per-user" && kind == unix.S_IFDIR:
		case name == "system.lock" && kind == unix.S_IFREG && st.Uid == 0:
			if st.Size > 0 {
				if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil {
					return fmt.Errorf("removing the stale lock %s: %w", filepath.Join(p.Dir(), name), err)
				}
			}
		default:
			return fmt.Errorf("profile %s holds %s, which neither nix-env nor nixcell made there (a container of an earlier nixcell could write there); remove it", p.Dir(), name)
		}
	}
	return nil
}

// Set makes storePath the profile's newest generation, as nix-env --set.
func (p Profile) Set(ctx context.Context, storePath string) (int, error) {
	if err := p.nixEnv(ctx, "--set", storePath); err != nil {
		return 0, err
	}
	gen, _, err := p.Current()
	return gen, err
}

var generationLink = regexp.MustCompile(`^system-([0-9]+)-link$`)

// Current returns the current generation and its system's store path;
// generation 0 means the profile has none.
func (p Profile) Current() (int, string, error) {
	link, err := os.Readlink(p.System())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading profile %s: %w", p.System(), err)
	}
	m := generationLink.FindStringSubmatch(filepath.Base(link))
	if m == nil {
		return 0, "", fmt.Errorf("profile %s points to %q, not to a generation", p.System(), link)
	}
	gen, _ := strconv.Atoi(m[1])
	target, err := filepath.EvalSymlinks(p.System())
	if err != nil {
		return 0, "", fmt.Errorf("reading profile %s: %w", p.System(), err)
	}
	return gen, target, nil
}

// Remove deletes the profile and GC roots, so the garbage collector may free
// the container's systems. It is idempotent. RemoveAll never follows a
// link below the directory it removes.
func (p Profile) Remove() error {
	for _, d := range []string{p.Dir(), p.GCRootsDir()} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	return nil
}
