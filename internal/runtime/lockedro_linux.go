package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Read-only binds that stay read-only.
//
// The host's Nix store, database and daemon socket directory are owned by
// the host's root and reach an unprivileged container through idmapped
// mounts, so that inside they belong to the container's root. The idmapping
// works both ways: through such a mount, the container's root writes as
// the host's root. Read-only is then all that protects the host's store,
// and a read-only flag set inside the container (as libcontainer sets it,
// after it has created the container's user and mount namespaces) is not
// binding: the container's root owns that mount namespace and may simply
// `mount -o remount,bind,rw /nix/store`.
//
// The kernel locks a mount's flags (MNT_LOCK_READONLY, _NOSUID, _NODEV and
// the atime flags) when a mount namespace is copied into a less privileged
// user namespace, and a bind of a locked mount keeps the locks. So nixcell
// makes these mounts on the host, before the container's namespaces exist:
// each source is cloned (open_tree), made idmapped, read-only, nosuid and
// nodev in one mount_setattr, and attached at a staging directory. The
// container's mount namespace is copied with the staging mounts locked;
// libcontainer binds them into the root, and the host detaches them as soon
// as the container's root is set up. Only the container's copies remain.

// stagingDir is where the host mounts a container's read-only binds while
// it starts: RUN/staging/NAME, next to libcontainer's RUN/containers.
func (c *Container) stagingDir() string {
	return stagingDir(c.StateRoot, c.Name)
}

func stagingDir(stateRoot, name string) string {
	return filepath.Join(filepath.Dir(stateRoot), "staging", name)
}

// stagedPath is where the i-th of the container's Nix binds is staged.
func (c *Container) stagedPath(i int) string {
	return filepath.Join(c.stagingDir(), strconv.Itoa(i))
}

// stageReadOnlyBinds mounts the read-only Nix binds of an unprivileged
// container at their staged paths. The caller detaches them with unstage
// once the container's root is set up, whether the start worked or not.
func (c *Container) stageReadOnlyBinds() error {
	dir := c.stagingDir()
	// Left by a start that was killed: nothing may still be mounted there.
	unstage(dir)
	// Every directory down to the mount points must be searchable by the
	// container's root, which makes the binds from inside its namespaces.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("creating staging directory: %w", err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		return err
	}
	userns, err := c.userNamespace()
	if err != nil {
		unstage(dir)
		return fmt.Errorf("creating a user namespace for idmapped mounts: %w", err)
	}
	defer userns.Close()
	for i, b := range c.nixBinds() {
		if !b.readOnly || b.source == c.closureStore() {
			continue // the closure store is locked in the private namespace
		}
		if err := stageOne(b.source, c.stagedPath(i), userns); err != nil {
			unstage(dir)
			return err
		}
	}
	return nil
}

// stageOne attaches an idmapped, read-only, nosuid, nodev clone of source
// at target.
func stageOne(source, target string, userns *os.File) error {
	if err := os.Mkdir(target, 0o711); err != nil {
		return fmt.Errorf("creating staging mount point: %w", err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", source, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("making an idmapped read-only mount of %s: %w", source, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching the idmapped mount of %s at %s: %w", source, target, err)
	}
	return nil
}

// unstage detaches whatever is mounted in a staging directory and removes
// it. It is idempotent.
func unstage(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		for unix.Unmount(p, unix.MNT_DETACH) == nil {
		}
		_ = os.Remove(p)
	}
	_ = os.Remove(dir)
}

// userNamespace returns a user namespace with the container's ID mapping,
// for mount_setattr(MOUNT_ATTR_IDMAP). It is held by a child process that
// never runs: started under ptrace, it stops at its first instruction,
// which is enough to open its namespace before killing it.
func (c *Container) userNamespace() (*os.File, error) {
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(c.IDs.Start), Size: int(c.IDs.Size)}}
	proc, err := os.StartProcess("/proc/self/exe", []string{"nixcell-userns"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: ids,
			GidMappings: ids,
			Ptrace:      true,
		},
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = proc.Kill()
		_, _ = proc.Wait()
	}()
	f, err := os.Open("/proc/" + strconv.Itoa(proc.Pid) + "/ns/user")
	if err != nil {
		return nil, errors.Join(errors.New("opening the helper's user namespace"), err)
	}
	return f, nil
}
