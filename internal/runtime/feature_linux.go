package runtime

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/nixcell/nixcell/internal/kernel"
)

// UnsupportedFeatureError is the kernel package's: the host lacks what a
// container needs.
type UnsupportedFeatureError = kernel.UnsupportedError

// checkHost returns an *UnsupportedFeatureError when the kernel cannot run
// the container: seccomp filters for every one, user namespaces for an
// unprivileged one, idmapped mounts on each host directory it sees through
// one, and overlayfs for an ephemeral one. Failing here gives the user the
// cause instead of a mount error from deep inside the runtime.
func (c *Container) checkHost() error {
	if err := checkSeccomp(); err != nil {
		return err
	}
	if c.Ephemeral {
		if err := kernel.Overlay(); err != nil {
			return err
		}
	}
	if c.Privileged() {
		return nil
	}
	if err := kernel.UserNamespaces(); err != nil {
		return err
	}
	if c.PlainRoot {
		if err := CheckPlainRootClosed(c.RootFS); err != nil {
			return err
		}
	}
	for _, dir := range c.idmappedSources() {
		if err := kernel.IdmapSupport(dir); err != nil {
			return err
		}
	}
	return nil
}

// idmappedSources are the host directories an unprivileged container sees
// through idmapped mounts.
func (c *Container) idmappedSources() []string {
	var dirs []string
	for _, m := range c.hostMounts() {
		if m.idmap {
			dirs = append(dirs, m.source)
		}
	}
	if c.StorePaths != nil {
		dirs = append(dirs, "/nix/store")
	}
	if c.PlainRoot {
		dirs = append(dirs, c.RootFS)
	}
	return dirs
}

// CheckPlainRootClosed refuses a plain root file system that host users
// other than root can reach. An unprivileged container sees it through an
// idmapped mount, so its root writes there as the host's root: a setuid
// program it planted would make any host user who can reach it root.
// systemd-nspawn asks the same of /var/lib/machines.
func CheckPlainRootClosed(dir string) error {
	err := hostfs.CheckClosed(dir)
	var reach *hostfs.ReachableError
	if errors.As(err, &reach) {
		return fmt.Errorf("%w; the container's root writes there as the host's root, so a setuid program it plants would make them root: keep it below a directory only root can enter (chmod 0700 %s, or move it below /var/lib/machines with mode 0700)",
			err, filepath.Dir(dir))
	}
	return err
}
