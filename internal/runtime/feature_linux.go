package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/hostfs"
	"golang.org/x/sys/unix"
)

// UnsupportedFeatureError says that the host lacks something a container
// needs, and what would provide it.
type UnsupportedFeatureError struct {
	Feature string // what is missing
	Need    string // what would provide it
}

func (e *UnsupportedFeatureError) Error() string {
	return fmt.Sprintf("%s: %s", e.Feature, e.Need)
}

func (e *UnsupportedFeatureError) Is(target error) bool { return target == fault.Unsupported }

// idmapFileSystems are the file systems whose idmapped mounts the kernel
// supports, with the release that added each (statfs magic numbers).
var idmapFileSystems = map[int64]struct {
	name  string
	since [2]int
}{
	unix.EXT4_SUPER_MAGIC:      {"ext4", [2]int{5, 12}},
	unix.XFS_SUPER_MAGIC:       {"xfs", [2]int{5, 12}},
	unix.MSDOS_SUPER_MAGIC:     {"vfat", [2]int{5, 12}},
	unix.BTRFS_SUPER_MAGIC:     {"btrfs", [2]int{5, 15}},
	unix.F2FS_SUPER_MAGIC:      {"f2fs", [2]int{5, 18}},
	unix.OVERLAYFS_SUPER_MAGIC: {"overlayfs", [2]int{5, 19}},
	unix.EROFS_SUPER_MAGIC_V1:  {"erofs", [2]int{5, 19}},
	unix.TMPFS_MAGIC:           {"tmpfs", [2]int{6, 3}},
	0x2fc12fc1:                 {"zfs", [2]int{6, 0}}, // with OpenZFS >= 2.2
}

// checkHost returns an *UnsupportedFeatureError when the kernel cannot run
// the container: seccomp filters for every one, user namespaces for an
// unprivileged one, idmapped mounts on each host directory it sees through
// one, and overlayfs for an ephemeral one. Failing here gives the user the
// cause instead of a mount error from deep inside the runtime.
func (c *Container) checkHost() error {
	if err := checkSeccomp(); err != nil {
		return err
	}
	if c.Ephemeral && !hasFileSystem("overlay") {
		return &UnsupportedFeatureError{"the kernel has no overlay file system, which ephemeral containers need",
			"load the overlay module (modprobe overlay), or set ephemeral = false"}
	}
	if c.Privileged() {
		return nil
	}
	if data, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(data)) == "0" {
		return &UnsupportedFeatureError{"user namespaces are disabled",
			"set the sysctl user.max_user_namespaces above 0, or create the container with --privileged"}
	}
	if c.PlainRoot {
		if err := CheckPlainRootClosed(c.RootFS); err != nil {
			return err
		}
	}
	kernel := kernelVersion()
	for _, dir := range c.idmappedSources() {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // a bind mount's host path, created or reported later
			}
			return fmt.Errorf("%s: %w", dir, err)
		}
		fs, ok := idmapFileSystems[int64(st.Type)]
		if !ok {
			return &UnsupportedFeatureError{
				fmt.Sprintf("%s is not on a file system that supports idmapped mounts (file system type %#x)", dir, st.Type),
				"put it on ext4, xfs, btrfs or tmpfs, or create the container with --privileged"}
		}
		if kernel[0] < fs.since[0] || kernel[0] == fs.since[0] && kernel[1] < fs.since[1] {
			return &UnsupportedFeatureError{
				fmt.Sprintf("%s is on %s, whose idmapped mounts need Linux %d.%d (this is %d.%d)", dir, fs.name, fs.since[0], fs.since[1], kernel[0], kernel[1]),
				"upgrade the kernel, or create the container with --privileged"}
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

// hasFileSystem tells whether the kernel knows the file system type
// (/proc/filesystems, which lists modules already loaded).
func hasFileSystem(name string) bool {
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

func kernelVersion() [2]int {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return [2]int{}
	}
	parts := strings.SplitN(unix.ByteSliceToString(u.Release[:]), ".", 3)
	var v [2]int
	for i := 0; i < 2 && i < len(parts); i++ {
		n := strings.TrimLeftFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' })
		v[i], _ = strconv.Atoi(strings.TrimRightFunc(n, func(r rune) bool { return r < '0' || r > '9' }))
	}
	return v
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
