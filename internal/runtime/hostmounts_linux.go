package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// Host mounts: every host directory or file a container sees (the Nix
// store, database and daemon socket, its profiles and GC roots, bind
// mounts, device copies) is mounted by file descriptor, never by path.
//
// Some of these sources lie in trees the container writes: a bind mount's
// host path may sit inside another, read-write bind mount, and its GC
// roots are its own. A path resolved on the host could then follow a link
// the container planted and mount any host directory into it. So each
// source is opened without following symbolic links (hostfs.Open), cloned
// from that handle (open_tree), given its attributes in one mount_setattr
// (read-only, nosuid, nodev, noexec, and the container's ID mapping where
// it is seen idmapped), and attached at HostDir/mnt/N, a path only the
// host controls, which libcontainer then binds into the container.
//
// Staging happens in the private mount namespace the start runs in (see
// inPrivateMounts): nothing is mounted in the host's namespace, and the
// staged mounts vanish with that namespace. The container's mount
// namespace is a copy made in its own, less privileged user namespace, so
// the kernel locks the flags of these mounts there (MNT_LOCK_READONLY,
// _NOSUID, _NODEV, _NOEXEC): container root cannot remount a read-only
// one read-write. That matters most for the idmapped ones, through which
// container root acts as the host's root.

// hostMount is a host directory or file that the container sees at dest.
type hostMount struct {
	source string // absolute host path without symbolic links
	dest   string
	// readOnly mounts stay read-only: the flag is locked.
	readOnly bool
	// idmap shows the source through the container's ID mapping: the
	// host's IDs appear as themselves inside (host root's files are its
	// root's), and what its root writes belongs to the host's root.
	// Without it the container's IDs are its range's on the host.
	idmap     bool
	recursive bool
	// attrs are MOUNT_ATTR_NOSUID, _NODEV, _NOEXEC.
	attrs uint64
	kind  hostMountKind
	// what names the mount in errors, e.g. "bind mount /data".
	what string
}

type hostMountKind int

const (
	nixDir     hostMountKind = iota // one of the host's Nix directories
	userBind                        // bindMounts
	deviceCopy                      // allowedDevices
)

const nixAttrs = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV

// hostMounts lists the container's host mounts in the order they are
// mounted (a parent before what is mounted inside it).
func (c *Container) hostMounts() []hostMount {
	unpriv := !c.Privileged()
	var ms []hostMount
	if c.ProfileDir != "" {
		if c.StorePaths == nil {
			ms = append(ms, hostMount{source: "/nix/store", dest: "/nix/store", readOnly: true, idmap: unpriv, attrs: nixAttrs})
		}
		ms = append(ms,
			hostMount{source: "/nix/var/nix/db", dest: "/nix/var/nix/db", readOnly: true, idmap: unpriv, attrs: nixAttrs},
			hostMount{source: "/nix/var/nix/daemon-socket", dest: "/nix/var/nix/daemon-socket", readOnly: true, idmap: unpriv, attrs: nixAttrs},
			// The profile is the host's: nix-env and nixcell act on it as
			// the host's root, so the container must never write there.
			hostMount{source: c.ProfileDir, dest: "/nix/var/nix/profiles", readOnly: true, idmap: unpriv, attrs: nixAttrs},
			// What the container manages itself is its own, owned by its
			// range on the host.
			hostMount{source: c.UserProfilesDir, dest: "/nix/var/nix/profiles/per-user", attrs: nixAttrs},
			hostMount{source: c.GCRootsDir, dest: "/nix/var/nix/gcroots", attrs: nixAttrs},
		)
		for i := range ms {
			ms[i].what = "mounting " + ms[i].dest
		}
	}
	for _, b := range c.Binds {
		ms = append(ms, hostMount{source: b.Source, dest: b.Destination, readOnly: b.ReadOnly,
			idmap: unpriv && !b.ReadOnly && b.HostIDs, recursive: true, kind: userBind, what: "bind mount " + b.Destination})
	}
	return ms
}

// mountDir is where the host mounts are staged during a start.
func (c *Container) mountDir() string { return filepath.Join(c.HostDir, "mnt") }

// stagedPath is where the i-th host mount is staged.
func (c *Container) stagedPath(i int) string {
	return filepath.Join(c.mountDir(), strconv.Itoa(i))
}

// libcontainerMount is how libcontainer binds a staged mount. The bind
// carries the staged clone's attributes (read-only, nosuid, nodev, noexec,
// the ID mapping; each submount's own, for a recursive one), locked in
// the container's mount namespace, so no flag is given: flags would make
// libcontainer remount the bind to set them again (a second mount, with
// its path checks, of every host mount of every start).
func (m hostMount) libcontainerMount(staged string) *configs.Mount {
	return &configs.Mount{Source: staged, Destination: m.dest, Device: "bind", Flags: unix.MS_BIND | unix.MS_REC}
}

// stageHostMounts attaches every host mount at its staged path. userns
// holds the container's ID mapping (nil for a privileged container).
// Preconditions: runs inside inPrivateMounts; HostDir exists.
func (c *Container) stageHostMounts(mounts []hostMount, userns *os.File) error {
	if err := os.Mkdir(c.mountDir(), 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for i, m := range mounts {
		if err := stage(m, c.stagedPath(i), userns); err != nil {
			return fmt.Errorf("%s: %w", m.what, err)
		}
	}
	return nil
}

// stage opens m's source without following symbolic links, clones it with
// its attributes and attaches the clone at target.
func stage(m hostMount, target string, userns *os.File) error {
	src, err := hostfs.Open(m.source, unix.O_PATH)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if err := mountPoint(target, fi.IsDir()); err != nil {
		return err
	}
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH
	setFlags := unix.AT_EMPTY_PATH
	if m.recursive {
		flags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(int(src.Fd()), "", uint(flags))
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", m.source, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: m.attrs}
	if m.readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if m.idmap {
		if userns == nil {
			return errors.New("an idmapped mount needs the container's user namespace")
		}
		attr.Attr_set |= unix.MOUNT_ATTR_IDMAP
		attr.Userns_fd = uint64(userns.Fd())
	}
	if attr.Attr_set != 0 {
		if err := unix.MountSetattr(tree, "", uint(setFlags), &attr); err != nil {
			return fmt.Errorf("setting the attributes of a mount of %s: %w", m.source, err)
		}
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching the mount of %s: %w", m.source, err)
	}
	return nil
}

// mountPoint makes an empty directory (or file) at target, a path only the
// host controls, unless one is there.
func mountPoint(target string, dir bool) error {
	var err error
	if dir {
		err = os.Mkdir(target, 0o711)
	} else {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			err = f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating a mount point: %w", err)
	}
	return nil
}
