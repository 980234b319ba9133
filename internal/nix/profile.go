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
)

// Where nixos-container keeps per-container profiles and GC roots.
const (
	ProfilesDir = "/nix/var/nix/profiles/per-container"
	GCRootsDir  = "/nix/var/nix/gcroots/per-container"
)

// Profile is one container's Nix profile directory. On disk:
//
//	ProfilesDir/NAME/system            -> system-N-link (the current generation)
//	ProfilesDir/NAME/system-N-link     -> /nix/store/...-nixos-system-NAME-...
//	GCRootsDir/NAME/                   the container's own GC roots
//
// The directory is mounted at /nix/var/nix/profiles inside the container,
// and the GC roots one at /nix/var/nix/gcroots.
type Profile struct {
	Name string
}

// Dir is the host directory mounted at /nix/var/nix/profiles inside.
func (p Profile) Dir() string { return filepath.Join(ProfilesDir, p.Name) }

// GCRootsDir is the host directory mounted at /nix/var/nix/gcroots inside.
func (p Profile) GCRootsDir() string { return filepath.Join(GCRootsDir, p.Name) }

// System is the profile's link to the current generation.
func (p Profile) System() string { return filepath.Join(p.Dir(), "system") }

// Ensure creates the profile and GC root directories, and closes their
// parents (ProfilesDir, GCRootsDir) to everyone but root.
//
// A container writes its profile and GC root directories through idmapped
// mounts, that is as the host's root: it can create a setuid-root program
// there. The mounts inside are nosuid, but on the host the directories
// would be open to every user, who could run it. Nothing but root needs to
// reach them on the host (nix-env, the garbage collector and nixcell run as
// root), and the container sees only its own directory.
func (p Profile) Ensure() error {
	for _, d := range []string{p.Dir(), p.GCRootsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := os.Chmod(filepath.Dir(d), 0o700); err != nil {
			return fmt.Errorf("closing %s to other users: %w", filepath.Dir(d), err)
		}
	}
	return nil
}

// Set makes storePath the profile's newest generation, as nix-env --set.
func (p Profile) Set(ctx context.Context, storePath string) (int, error) {
	if err := p.Ensure(); err != nil {
		return 0, err
	}
	if _, err := run(ctx, nil, "nix-env", "-p", p.System(), "--set", storePath); err != nil {
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
// the container's systems. It is idempotent.
func (p Profile) Remove() error {
	for _, d := range []string{p.Dir(), p.GCRootsDir()} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	return nil
}
