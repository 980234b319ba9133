package runtime

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// What the guest sees of the kernel beyond what libcontainer sets up, as
// systemd-nspawn gives it (systemd's CONTAINER_INTERFACE.md):
//
//   - a boot ID of its own at every start, so journald tells its boots
//     apart: a read-only bind of a fresh random UUID over
//     /proc/sys/kernel/random/boot_id, which the kernel does not namespace;
//   - /proc/sys/net writable when the network namespace is its own (its
//     network sysctls are then its own; systemd-sysctl.service runs only
//     when /proc/sys/net is writable), the rest of /proc/sys read-only.
//
// libcontainer mounts nothing below /proc but a few files of its own
// choosing, so the host makes these two mounts itself, in the container's
// mount namespace, after libcontainer has set it up and before the init
// program runs. The boot ID's file is the host's (HostDir/boot_id, owned
// by the host's root, mode 0444): the container sees it as nobody's and
// cannot write it, even through a mount it remounts read-write.

// bootIDFile is the container's boot ID for this start, in HostDir.
func (c *Container) bootIDFile() string { return filepath.Join(c.HostDir, "boot_id") }

// writeBootID makes a fresh boot ID for this start. Preconditions: HostDir
// was just made afresh (prepareHostDir).
func (c *Container) writeBootID() error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	id := fmt.Sprintf("%x-%x-%x-%x-%x\n", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	return os.WriteFile(c.bootIDFile(), []byte(id), 0o444)
}

// ownNetwork tells whether the container has a network namespace of its
// own (neither the host's nor one it joined).
func (c *Container) ownNetwork() bool { return !c.HostNetwork && c.NetNS == "" }

// setupGuestView makes the boot ID and /proc/sys/net mounts in the mount
// namespace of the container whose init is pid. It runs on a thread of its
// own that enters that namespace and is discarded afterwards.
// Preconditions: the init exists and has not started its program.
func (c *Container) setupGuestView(pid int) error {
	// The boot ID's clone is made here, in the host's namespace, where its
	// source is; open_tree cannot clone from another namespace.
	src, err := os.OpenFile(c.bootIDFile(), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("boot ID: %w", err)
	}
	defer src.Close()
	bootID, err := unix.OpenTree(int(src.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("boot ID: open_tree: %w", err)
	}
	defer unix.Close(bootID)
	attrs := uint64(unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC)
	// Private: a clone is in its source's peer group, which the
	// container's /run/host is a slave of, and CRIU cannot restore that
	// sharing with a mount it binds from outside (a checkpoint's boot ID).
	if err := unix.MountSetattr(bootID, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: attrs, Propagation: unix.MS_PRIVATE}); err != nil {
		return fmt.Errorf("boot ID: mount_setattr: %w", err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("opening the container's mount namespace: %w", err)
	}
	defer ns.Close()

	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with this goroutine
		// setns to a mount namespace needs a thread that shares no file
		// system information (root, cwd) with the others.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("entering the container's mount namespace: %w", err)
			return
		}
		// The thread's root is now the container's.
		if err := attachOverProc(bootID, "/proc/sys/kernel/random/boot_id"); err != nil {
			errc <- fmt.Errorf("boot ID: %w", err)
			return
		}
		if c.ownNetwork() {
			if err := writableProcSysNet(); err != nil {
				errc <- fmt.Errorf("making /proc/sys/net writable: %w", err)
				return
			}
		}
		errc <- nil
	}()
	return <-errc
}

// openInProc opens path, a path below the container's /proc, for mounting
// on: without following any symbolic link, and only if it is on procfs.
func openInProc(path string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("opening %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%s is not on the container's procfs", path)
	}
	return fd, nil
}

// attachOverProc attaches the detached mount tree at path below /proc.
// Preconditions: runs in the container's mount namespace.
func attachOverProc(tree int, path string) error {
	target, err := openInProc(path)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching over %s: %w", path, err)
	}
	return nil
}

// writableProcSysNet binds /proc/sys/net over itself, writable, on top of
// the read-only /proc/sys, as systemd-nspawn does for a container with a
// network namespace of its own. Preconditions: runs in the container's
// mount namespace.
func writableProcSysNet() error {
	const path = "/proc/sys/net"
	src, err := openInProc(path)
	if errors.Is(err, unix.ENOENT) {
		return nil // a kernel without networking
	}
	if err != nil {
		return err
	}
	defer unix.Close(src)
	tree, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{
		Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC,
		Attr_clr: unix.MOUNT_ATTR_RDONLY,
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	return attachOverProc(tree, path)
}
