package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// rootDirs are created in the root before every start, as nixos-container
// does before it boots a NixOS system, plus the mount points of the host's
// Nix directories. Modes are those of a NixOS root.
var rootDirs = []struct {
	path string
	mode os.FileMode
}{
	{"etc", 0o755}, {"usr", 0o755}, {"usr/bin", 0o755}, {"var", 0o755},
	{"var/lib", 0o755}, {"var/lib/private", 0o700}, {"root", 0o700},
	{"nix", 0o755}, {"nix/store", 0o755}, {"nix/var", 0o755}, {"nix/var/nix", 0o755},
	{"nix/var/nix/db", 0o755}, {"nix/var/nix/daemon-socket", 0o755},
	{"nix/var/nix/profiles", 0o755}, {"nix/var/nix/gcroots", 0o755},
	{"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755}, {"tmp", os.ModeSticky | 0o777},
}

// rootFiles are created empty when missing: systemd wants both to exist.
var rootFiles = []string{"etc/os-release", "etc/machine-id"}

// prepareRoot creates what a NixOS system expects to find in its root
// before the init runs. Everything it creates is owned by the container's
// root. The root's contents belong to the container, so every path is
// resolved inside it (os.Root): a symlink planted by the container cannot
// make the host write elsewhere. Existing entries are left as they are.
func (c *Container) prepareRoot() error {
	uid := int(c.IDs.Start)
	if err := os.MkdirAll(c.RootFS, 0o755); err != nil {
		return fmt.Errorf("creating root %s: %w", c.RootFS, err)
	}
	if err := os.Lchown(c.RootFS, uid, uid); err != nil {
		return fmt.Errorf("chown root %s: %w", c.RootFS, err)
	}
	root, err := os.OpenRoot(c.RootFS)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, d := range rootDirs {
		err := root.Mkdir(d.path, d.mode.Perm())
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating %s in the root: %w", d.path, err)
		}
		// Mkdir's mode is filtered by the umask; sticky /tmp needs Chmod.
		if err := root.Chmod(d.path, d.mode); err != nil {
			return err
		}
		if err := root.Lchown(d.path, uid, uid); err != nil {
			return err
		}
	}
	for _, name := range rootFiles {
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating %s in the root: %w", name, err)
		}
		f.Close()
		if err := root.Lchown(name, uid, uid); err != nil {
			return err
		}
	}
	return nil
}
