package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// The container's /dev is made on the host's side, in the start's private
// mount namespace, at paths only the host controls, and libcontainer binds
// it whole (a /dev bind tells it to make no nodes or links of its own).
// libcontainer would make the same inside, each piece through its
// path-checked steps: a tmpfs, a bind of every standard node (the
// container's root may not make nodes) and six links cost ≈ 3 ms of a
// start's 23 in its init (traces, medians of 20); made here, the host's
// root makes the nodes on a tmpfs of the host's user namespace, where they
// open for the container too, in ≈ 0.3 ms.
//
// The tree holds no mount of its own (no bind per node, no /dev/shm, which
// libcontainer mounts inside): a checkpoint's restore binds it again as
// the external mount it is to CRIU, without its submounts, and the kernel
// refuses that for a tree with submounts locked in the container's user
// namespace. What differs from a tmpfs mounted inside: its owner is the
// host's user namespace, so the container cannot remount it (nor make
// nodes on it: that takes CAP_MKNOD in the host's), and a checkpoint does
// not carry what the guest adds at its top, so the links a systemd guest
// makes there are made here.

// devDir is where the container's /dev is staged during a start.
func (c *Container) devDir() string { return filepath.Join(c.mountDir(), "dev") }

// devLinks are the links of /dev: every Linux system's (libcontainer makes
// the same), and systemd's /dev/log, which its journal socket would make.
func (c *Container) devLinks() [][2]string {
	links := [][2]string{
		{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
		{"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"core", "/proc/kcore"})
	}
	if c.Systemd {
		links = append(links, [2]string{"log", "/run/systemd/journal/dev-log"})
	}
	return links
}

// stageDev makes the container's /dev at devDir: a tmpfs owned by the
// container's root holding the standard device nodes, the links, and mount
// points for what libcontainer mounts inside (pts, shm, mqueue, the
// console).
// Preconditions: runs inside inPrivateMounts; mountDir exists.
func (c *Container) stageDev() error {
	dir := c.devDir()
	if err := os.Mkdir(dir, 0o711); err != nil {
		return fmt.Errorf("staging /dev: %w", err)
	}
	root := int(c.IDs.Start) // 0 for a privileged container
	flags, err := devFlags()
	if err != nil {
		return fmt.Errorf("staging /dev: %w", err)
	}
	opts := fmt.Sprintf("mode=755,size=65536k,uid=%d,gid=%d", root, root)
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := mkdirOwned(filepath.Join(dir, d), root); err != nil {
			return fmt.Errorf("staging /dev: %w", err)
		}
	}
	// libcontainer binds the console there, opening the point inside; a
	// restore needs it before CRIU mounts the console's terminal on it.
	console := filepath.Join(dir, "console")
	if err := mountPoint(console, false); err != nil {
		return fmt.Errorf("staging /dev/console: %w", err)
	}
	if err := os.Lchown(console, root, root); err != nil {
		return fmt.Errorf("staging /dev/console: %w", err)
	}
	for _, d := range specconv.AllowedDevices {
		if d.Path == "" || d.Path == "/dev/ptmx" { // ptmx is a link to the container's devpts
			continue
		}
		p := filepath.Join(dir, strings.TrimPrefix(d.Path, "/dev/"))
		kind := uint32(unix.S_IFCHR)
		if d.Type == devconfig.BlockDevice {
			kind = unix.S_IFBLK
		}
		if err := makeNode(p, kind|uint32(d.FileMode.Perm()), int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))), root); err != nil {
			return fmt.Errorf("staging %s: %w", d.Path, err)
		}
	}
	for _, l := range c.devLinks() {
		p := filepath.Join(dir, l[0])
		if err := os.Symlink(l[1], p); err != nil {
			return fmt.Errorf("staging /dev: %w", err)
		}
		if err := os.Lchown(p, root, root); err != nil {
			return fmt.Errorf("staging /dev: %w", err)
		}
	}
	return nil
}

// devFlags are the mount flags of the staged /dev: nosuid, and the host's
// /dev's own noexec and access time mode. The masked paths of /proc are
// binds of /dev/null, so they take these flags; a restore binds the host's
// /dev/null there and remounts it with them, which the kernel refuses in
// the container's user namespace if that changes the access time mode or
// clears a flag (a tmpfs of libcontainer's had its /dev/null bound from
// the host's, with the host's flags).
func devFlags() (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/null", &st); err != nil {
		return 0, err
	}
	flags := uintptr(unix.MS_NOSUID)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	if flags&(unix.MS_NOATIME|unix.MS_RELATIME) == 0 {
		flags |= unix.MS_STRICTATIME
	}
	return flags, nil
}

// mkdirOwned makes the directory path, owned by uid (and the group of that
// number).
func mkdirOwned(path string, uid int) error {
	if err := os.Mkdir(path, 0o755); err != nil {
		return err
	}
	return os.Lchown(path, uid, uid)
}
