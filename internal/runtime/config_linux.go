package runtime

import (
	"fmt"
	"path/filepath"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// Container is everything the runtime needs to run one container. It is
// derived from the container's stored state on every start and never stored
// itself.
type Container struct {
	// Name is the container's name; it is also its host name and its
	// libcontainer ID.
	Name string
	// StateRoot is the libcontainer state root (one directory per running
	// container, on a tmpfs so a host reboot forgets them).
	StateRoot string
	// RootFS is the container's root directory on the host.
	RootFS string
	// CgroupPath is the container's absolute cgroup path, the same in every
	// hierarchy.
	CgroupPath string
	// IDs is the host range the container's user namespace maps 0..Size-1
	// to. Size 0 means privileged: no user namespace, container root is host
	// root.
	IDs IDRange
	// ProfileDir and GCRootsDir are the host directories mounted at
	// /nix/var/nix/profiles and /nix/var/nix/gcroots inside.
	ProfileDir, GCRootsDir string
	// Init is the path, inside the container, of the program to run as PID 1.
	Init string
	// ConsoleLog receives the init's output; it is also /dev/console inside.
	ConsoleLog string
	// Env is added to the init's environment.
	Env []string
	// Limits cap its resources; SetLimits changes them while it runs.
	Limits Limits
}

// IDRange is the host UID and GID range of an unprivileged container.
type IDRange struct {
	Start, Size uint32
}

// Privileged tells whether the container shares the host's user IDs.
func (c *Container) Privileged() bool { return c.IDs.Size == 0 }

// capabilities is the bounding set systemd-nspawn gives a container by
// default (plus CAP_NET_ADMIN, which nspawn adds for a private network): no
// module loading, no raw I/O, no clock, no MAC administration.
var capabilities = []string{
	"CAP_AUDIT_CONTROL", "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
	"CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_OWNER", "CAP_KILL",
	"CAP_LEASE", "CAP_LINUX_IMMUTABLE", "CAP_MKNOD", "CAP_NET_ADMIN",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
	"CAP_SYS_CHROOT", "CAP_SYS_NICE", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TTY_CONFIG",
}

// hostOSRelease is bound at /run/host/os-release, as systemd expects of a
// container manager.
const hostOSRelease = "/etc/os-release"

// nixBind is one of the host's Nix directories a container sees.
type nixBind struct {
	source, dest string
	readOnly     bool
}

func (c *Container) nixBinds() []nixBind {
	return []nixBind{
		{"/nix/store", "/nix/store", true},
		{"/nix/var/nix/db", "/nix/var/nix/db", true},
		{"/nix/var/nix/daemon-socket", "/nix/var/nix/daemon-socket", true},
		{c.ProfileDir, "/nix/var/nix/profiles", false},
		{c.GCRootsDir, "/nix/var/nix/gcroots", false},
	}
}

// config builds the libcontainer configuration.
func (c *Container) config() (*configs.Config, error) {
	const (
		noExec = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
		tmp    = unix.MS_NOSUID | unix.MS_NODEV
	)
	osRelease, err := filepath.EvalSymlinks(hostOSRelease)
	if err != nil {
		return nil, fmt.Errorf("finding the host's os-release: %w", err)
	}
	mounts := []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: noExec},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: noExec, Data: "mode=1777,size=65536k"},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: noExec},
		{Source: c.ConsoleLog, Destination: "/dev/console", Device: "bind", Flags: unix.MS_BIND | noExec},
		{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: noExec | unix.MS_RDONLY},
		{Source: "tmpfs", Destination: "/run", Device: "tmpfs", Flags: tmp | unix.MS_STRICTATIME, Data: "mode=755"},
		{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: tmp | unix.MS_STRICTATIME, Data: "mode=1777"},
		{Source: osRelease, Destination: "/run/host/os-release", Device: "bind", Flags: unix.MS_BIND | unix.MS_RDONLY | noExec},
	}
	for i, b := range c.nixBinds() {
		flags := unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV
		if b.readOnly {
			flags |= unix.MS_RDONLY
		}
		m := &configs.Mount{Source: b.source, Destination: b.dest, Device: "bind", Flags: flags}
		if b.readOnly && !c.Privileged() {
			// Idmapped and locked read-only on the host while the
			// container starts (lockedro_linux.go).
			m.Source = c.stagedPath(i)
		} else if !c.Privileged() {
			// The host's root owns these; through an idmapped mount they
			// appear owned by the container's root, and nothing is chowned.
			m.IDMapping = &configs.MountIDMapping{UIDMappings: c.idMaps(), GIDMappings: c.idMaps()}
		}
		mounts = append(mounts, m)
	}

	var rules []*devconfig.Rule
	for _, d := range specconv.AllowedDevices {
		rules = append(rules, &d.Rule)
	}
	caps := grantedCapabilities()
	resources := &cgroups.Resources{Devices: rules}
	c.Limits.apply(resources, false)
	namespaces := configs.Namespaces{
		{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
		{Type: configs.NEWPID}, {Type: configs.NEWNET}, {Type: configs.NEWCGROUP},
	}
	cfg := &configs.Config{
		Rootfs:     c.RootFS,
		Hostname:   c.Name,
		Namespaces: namespaces,
		Capabilities: &configs.Capabilities{
			Bounding: caps, Effective: caps, Permitted: caps,
		},
		Cgroups: &cgroups.Cgroup{
			Path:      c.CgroupPath,
			Resources: resources,
		},
		Seccomp: seccompFilter(),
		Devices: specconv.AllowedDevices,
		Mounts:  mounts,
		MaskPaths: []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		},
		ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		Networks:      []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}},
	}
	if !c.Privileged() {
		cfg.Namespaces = append(cfg.Namespaces, configs.Namespace{Type: configs.NEWUSER})
		cfg.UIDMappings = c.idMaps()
		cfg.GIDMappings = c.idMaps()
	}
	return cfg, nil
}

func (c *Container) idMaps() []configs.IDMap {
	return []configs.IDMap{{ContainerID: 0, HostID: int64(c.IDs.Start), Size: int64(c.IDs.Size)}}
}
