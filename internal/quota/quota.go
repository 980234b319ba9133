// Package quota owns the disk quotas of containers' roots (limits.disk):
// what a root may take of the file system that holds it. ext4 and XFS
// count a root's files by project: the root directory gets the
// container's project ID with inheritance, so everything made below it
// has it, and the project's block limit is the quota. btrfs counts a
// subvolume by its qgroup: the root is made a subvolume, and its qgroup's
// limit of referenced bytes is the quota. Other file systems, and these
// without their quotas enabled, refuse with what they need.
package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/fault"
)

// ErrUnsupported means the file system cannot hold a root's quota as it
// is; the message says what it needs.
var ErrUnsupported = fault.New(fault.Unsupported, "no disk quota")

// Kinds of file system, by how they count a root's space.
const (
	none = iota
	project
	qgroup
)

// kindOf is how the file system at path counts a root, and its name for
// messages.
func kindOf(path string) (int, string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return none, "", err
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return project, "ext4", nil
	case unix.XFS_SUPER_MAGIC:
		return project, "XFS", nil
	case unix.BTRFS_SUPER_MAGIC:
		return qgroup, "btrfs", nil
	case unix.TMPFS_MAGIC:
		return none, "tmpfs", nil
	case unix.OVERLAYFS_SUPER_MAGIC:
		return none, "overlayfs", nil
	}
	return none, fmt.Sprintf("file system of type %#x", st.Type), nil
}

// MakeRoot makes the directory path for a root with a quota: on btrfs a
// subvolume, whose qgroup counts it; elsewhere a directory. An existing
// path is left as it is.
func MakeRoot(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	kind, _, err := kindOf(filepath.Dir(path))
	if err != nil {
		return err
	}
	if kind != qgroup {
		return os.Mkdir(path, 0o755)
	}
	parent, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	var args btrfsVolArgs
	copy(args.name[:len(args.name)-1], filepath.Base(path))
	if err := ioctl(parent, btrfsIocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("making the btrfs subvolume %s: %w", path, err)
	}
	return nil
}

// Set limits what the root at path, of project ID id, may take to bytes;
// 0 removes the limit. The root is a directory made by MakeRoot (on
// btrfs, a subvolume), not a symlink.
func Set(path string, id uint32, bytes uint64) error {
	kind, fsName, err := kindOf(path)
	if err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch kind {
	case project:
		return setProject(fd, path, fsName, id, bytes)
	case qgroup:
		return setQgroup(fd, path, bytes)
	}
	if bytes == 0 {
		return nil
	}
	return fmt.Errorf("%w on %s: the state directory's %s has no per-directory quota; limits.disk needs ext4 or XFS with project quotas, or btrfs with quotas enabled",
		ErrUnsupported, path, fsName)
}

// setProject gives the directory fd the project ID id, inherited by what
// is made below it, and sets the project's block limit.
func setProject(fd int, path, fsName string, id uint32, bytes uint64) error {
	// The limit first: it fails on a file system without project quotas
	// before the directory is changed.
	q := ifDqblk{bhardlimit: (bytes + 1023) / 1024, valid: qifBlimits}
	if err := quotactlFd(fd, qcmd(qSetQuota, prjQuota), id, unsafe.Pointer(&q)); err != nil {
		if bytes == 0 {
			return nil // nothing to remove
		}
		how := "mkfs.ext4 -O project,quota (or tune2fs -O project,quota) and mount -o prjquota"
		if fsName == "XFS" {
			how = "mount -o prjquota"
		}
		why := err.Error()
		if errors.Is(err, unix.ESRCH) {
			why = "they are not on"
		}
		return fmt.Errorf("%w on %s: the state directory's %s has no project quotas (%s); limits.disk needs %s",
			ErrUnsupported, path, fsName, why, how)
	}
	if bytes == 0 {
		return nil
	}
	var x fsxattr
	if err := ioctl(fd, fsIocFsgetxattr, unsafe.Pointer(&x)); err != nil {
		return fmt.Errorf("reading the project of %s: %w", path, err)
	}
	if x.projid == id && x.xflags&fsXflagProjinherit != 0 {
		return nil
	}
	x.projid, x.xflags = id, x.xflags|fsXflagProjinherit
	if err := ioctl(fd, fsIocFssetxattr, unsafe.Pointer(&x)); err != nil {
		return fmt.Errorf("giving %s the project %d: %w", path, id, err)
	}
	return nil
}

// setQgroup sets the limit of the qgroup of the subvolume fd, at path.
func setQgroup(fd int, path string, bytes uint64) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Ino != btrfsFirstFreeObjectID {
		if bytes == 0 {
			return nil
		}
		return fmt.Errorf("%w on %s: it is a plain directory, not a btrfs subvolume (the container was made without limits.disk); destroy and create it with limits.disk", ErrUnsupported, path)
	}
	lookup := btrfsInoLookupArgs{objectid: btrfsFirstFreeObjectID}
	if err := ioctl(fd, btrfsIocInoLookup, unsafe.Pointer(&lookup)); err != nil {
		return fmt.Errorf("finding the btrfs subvolume of %s: %w", path, err)
	}
	// Through the directory above: the change is a transaction, whose
	// space a subvolume already over its limit could not reserve.
	parent, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	args := btrfsQgroupLimitArgs{qgroupid: lookup.treeid, flags: btrfsQgroupLimitMaxRfer, maxRfer: bytes}
	if bytes == 0 {
		args.maxRfer = ^uint64(0) // removes the limit
	}
	err = ioctl(parent, btrfsIocQgroupLimit, unsafe.Pointer(&args))
	if errors.Is(err, unix.ENOTCONN) {
		if bytes == 0 {
			return nil
		}
		return fmt.Errorf("%w on %s: quotas are off on its btrfs; limits.disk needs btrfs quota enable %s", ErrUnsupported, path, mountPoint(path))
	}
	if err != nil {
		return fmt.Errorf("setting the btrfs qgroup limit of %s: %w", path, err)
	}
	return nil
}

// Clear removes the quota of the root at path, of project ID id, before
// the root goes: a project's limit outlives its files. A qgroup goes with
// its subvolume.
func Clear(path string, id uint32) error {
	kind, _, err := kindOf(path)
	if errors.Is(err, unix.ENOENT) || err == nil && kind != project {
		return nil
	}
	if err != nil {
		return err
	}
	return Set(path, id, 0)
}

// mountPoint is the mount point of the file system holding path.
func mountPoint(path string) string {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil {
		return path
	}
	for path != "/" {
		var up unix.Stat_t
		if unix.Lstat(filepath.Dir(path), &up) != nil || up.Dev != st.Dev {
			break
		}
		path = filepath.Dir(path)
	}
	return path
}

// The kernel's interfaces (linux/fs.h, linux/quota.h, linux/btrfs.h).
const (
	fsIocFsgetxattr         = 0x801c581f
	fsIocFssetxattr         = 0x401c5820
	fsXflagProjinherit      = 0x200
	qSetQuota               = 0x800008
	prjQuota                = 2
	qifBlimits              = 1
	btrfsIocSubvolCreate    = 0x5000940e
	btrfsIocQgroupLimit     = 0x8030942b
	btrfsIocInoLookup       = 0xd0009412
	btrfsQgroupLimitMaxRfer = 1
	// btrfsFirstFreeObjectID is the inode number of a subvolume's root.
	btrfsFirstFreeObjectID = 256
)

type fsxattr struct {
	xflags, extsize, nextents, projid, cowextsize uint32
	pad                                           [8]byte
}

type ifDqblk struct {
	bhardlimit, bsoftlimit, curspace, ihardlimit, isoftlimit, curinodes, btime, itime uint64
	valid                                                                             uint32
	_                                                                                 uint32
}

type btrfsVolArgs struct {
	fd   int64
	name [4088]byte
}

type btrfsInoLookupArgs struct {
	treeid, objectid uint64
	name             [4080]byte
}

type btrfsQgroupLimitArgs struct {
	qgroupid                                  uint64
	flags, maxRfer, maxExcl, rsvRfer, rsvExcl uint64
}

func qcmd(cmd, typ uint32) uint32 { return cmd<<8 | typ&0xff }

func quotactlFd(fd int, cmd, id uint32, addr unsafe.Pointer) error {
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd), uintptr(id), uintptr(addr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}
