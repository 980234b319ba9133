// Package kernel owns what nixcell asks of the running kernel: its
// release, whether it has a feature a container needs (user namespaces,
// idmapped mounts on a file system, overlayfs, seccomp filters, cgroup2),
// and a user namespace with a given ID mapping for idmapped mounts. A
// missing feature is an *UnsupportedError naming it and what provides it,
// of class fault.Unsupported. The runtime checks a container against it
// before a start, and `nixcell doctor` and the tests' skips check the host
// with it, so all three say the same.
package kernel

// #include "userns_linux.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/fault"
)

// UnsupportedError says that the host lacks something a container needs,
// and what would provide it.
type UnsupportedError struct {
	Feature string // what is missing
	Need    string // what would provide it
}

func (e *UnsupportedError) Error() string { return fmt.Sprintf("%s: %s", e.Feature, e.Need) }

// Is makes it a fault.Unsupported.
func (e *UnsupportedError) Is(target error) bool { return target == fault.Unsupported }

// Release is a kernel release, major and minor.
type Release [2]int

func (r Release) String() string { return fmt.Sprintf("%d.%d", r[0], r[1]) }

// AtLeast tells whether r is major.minor or later.
func (r Release) AtLeast(major, minor int) bool {
	return r[0] > major || r[0] == major && r[1] >= minor
}

// Running is the running kernel's release (zero if unreadable).
func Running() Release {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return Release{}
	}
	parts := strings.SplitN(unix.ByteSliceToString(u.Release[:]), ".", 3)
	var v Release
	for i := 0; i < 2 && i < len(parts); i++ {
		n := strings.TrimLeftFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' })
		v[i], _ = strconv.Atoi(strings.TrimRightFunc(n, func(r rune) bool { return r < '0' || r > '9' }))
	}
	return v
}

// idmapFileSystems are the file systems whose idmapped mounts the kernel
// supports, with the release that added each (statfs magic numbers).
var idmapFileSystems = map[int64]struct {
	name  string
	since Release
}{
	unix.EXT4_SUPER_MAGIC:      {"ext4", Release{5, 12}},
	unix.XFS_SUPER_MAGIC:       {"xfs", Release{5, 12}},
	unix.MSDOS_SUPER_MAGIC:     {"vfat", Release{5, 12}},
	unix.BTRFS_SUPER_MAGIC:     {"btrfs", Release{5, 15}},
	unix.F2FS_SUPER_MAGIC:      {"f2fs", Release{5, 18}},
	unix.OVERLAYFS_SUPER_MAGIC: {"overlayfs", Release{5, 19}},
	unix.EROFS_SUPER_MAGIC_V1:  {"erofs", Release{5, 19}},
	unix.TMPFS_MAGIC:           {"tmpfs", Release{6, 3}},
	0x2fc12fc1:                 {"zfs", Release{6, 0}}, // with OpenZFS >= 2.2
}

// IdmapSupport returns an *UnsupportedError when the running kernel cannot
// make an idmapped mount of dir's file system; a missing dir is nil.
func IdmapSupport(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("%s: %w", dir, err)
	}
	fs, ok := idmapFileSystems[int64(st.Type)]
	if !ok {
		return &UnsupportedError{
			fmt.Sprintf("%s is not on a file system that supports idmapped mounts (file system type %#x)", dir, st.Type),
			"put it on ext4, xfs, btrfs or tmpfs, or create the container with --privileged"}
	}
	if r := Running(); !r.AtLeast(fs.since[0], fs.since[1]) {
		return &UnsupportedError{
			fmt.Sprintf("%s is on %s, whose idmapped mounts need Linux %s (this is %s)", dir, fs.name, fs.since, r),
			"upgrade the kernel, or create the container with --privileged"}
	}
	return nil
}

// UserNamespaces returns an *UnsupportedError when user namespaces are
// disabled.
func UserNamespaces() error {
	if data, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(data)) == "0" {
		return &UnsupportedError{"user namespaces are disabled",
			"set the sysctl user.max_user_namespaces above 0, or create the container with --privileged"}
	}
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return &UnsupportedError{"the kernel has no user namespaces", "use a kernel built with CONFIG_USER_NS"}
	}
	return nil
}

// Overlay returns an *UnsupportedError when the kernel has no overlay file
// system (ephemeral containers need it).
func Overlay() error {
	if !HasFileSystem("overlay") {
		return &UnsupportedError{"the kernel has no overlay file system, which ephemeral containers need",
			"load the overlay module (modprobe overlay), or set ephemeral = false"}
	}
	return nil
}

// SeccompFilters returns an *UnsupportedError when the kernel has no
// seccomp filters.
func SeccompFilters() error {
	status, err := os.ReadFile("/proc/self/status")
	if err == nil && !strings.Contains(string(status), "\nSeccomp:") {
		return &UnsupportedError{"the kernel has no seccomp filters",
			"use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER"}
	}
	return nil
}

// HasFileSystem tells whether the kernel knows the file system type
// (/proc/filesystems, which lists modules already loaded, or a module of
// that name for the running kernel).
func HasFileSystem(name string) bool {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return true // let the mount itself say
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	// Not loaded yet: mounting it would load the module, if there is one.
	_, err = os.Stat("/sys/module/" + name)
	return err == nil || moduleAvailable(name)
}

// moduleAvailable tells whether a loadable module of that name exists for
// the running kernel.
func moduleAvailable(name string) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return true
	}
	data, err := os.ReadFile("/lib/modules/" + unix.ByteSliceToString(u.Release[:]) + "/modules.dep")
	if err != nil {
		return true
	}
	return strings.Contains(string(data), "/"+name+".ko")
}

// CgroupLayout is how the host's cgroup file systems are mounted.
type CgroupLayout string

const (
	CgroupV2     CgroupLayout = "v2"     // unified: cgroup2 at /sys/fs/cgroup
	CgroupHybrid CgroupLayout = "hybrid" // v1 controllers, cgroup2 at /sys/fs/cgroup/unified
	CgroupV1     CgroupLayout = "v1"     // no cgroup2
)

// Cgroups returns the host's cgroup layout.
func Cgroups() CgroupLayout {
	if isCgroup2("/sys/fs/cgroup") {
		return CgroupV2
	}
	if isCgroup2("/sys/fs/cgroup/unified") {
		return CgroupHybrid
	}
	return CgroupV1
}

func isCgroup2(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// UserNamespace returns a user namespace whose IDs 0..size-1 are the host's
// start..start+size-1, which idmapped mounts take as their mapping. It
// belongs to a helper child that runs nothing but a wait for its pipe's
// end (userns_linux.c): it needs no exec, which cost a start 1.4 ms as a
// re-exec of this binary stopped under ptrace. The helper is gone when
// this returns.
func UserNamespace(start, size uint32) (*os.File, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("creating a user namespace for idmapped mounts: %w", err)
	}
	defer unix.Close(p[0])
	var handle unsafe.Pointer
	pid := int(C.nixcell_userns_child(C.int(p[0]), C.int(p[1]), &handle))
	if pid < 0 {
		unix.Close(p[1])
		return nil, fmt.Errorf("creating a user namespace for idmapped mounts: %w", syscall.Errno(-pid))
	}
	defer func() {
		unix.Close(p[1]) // the helper's read ends: it exits
		for {
			var ws unix.WaitStatus
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err == nil || err == unix.ECHILD {
				C.nixcell_userns_free(handle) // the helper ran on it until it exited
			}
			return
		}
	}()
	mapping := fmt.Sprintf("0 %d %d\n", start, size)
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f), []byte(mapping), 0); err != nil {
			return nil, fmt.Errorf("mapping the IDs of a user namespace for idmapped mounts: %w", err)
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		return nil, fmt.Errorf("opening the helper's user namespace: %w", err)
	}
	return f, nil
}

// ProbeIdmap makes, and drops, an idmapped mount of dir with a throwaway
// mapping: nil when the kernel can do it there. It catches what
// IdmapSupport's table cannot (a file system built without it, a security
// module that refuses).
func ProbeIdmap(dir string) error {
	if err := IdmapSupport(dir); err != nil {
		return err
	}
	userns, err := UserNamespace(1<<31, 1)
	if err != nil {
		return err
	}
	defer userns.Close()
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return &UnsupportedError{fmt.Sprintf("open_tree of %s failed: %v", dir, err), "use Linux 5.12 or later"}
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return &UnsupportedError{fmt.Sprintf("an idmapped mount of %s failed: %v", dir, err),
			"put it on a file system that supports idmapped mounts (ext4, xfs, btrfs), or create containers with --privileged"}
	}
	return nil
}
