package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nixcell/nixcell/internal/console"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/trace"
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
	// HostDir is this container's directory for what the host gives it
	// while it runs (see state.Store.HostDir): recreated at every start,
	// removed by Cleanup.
	HostDir string
	// RootFS is the container's root directory on the host.
	RootFS string
	// PlainRoot says RootFS is a plain directory tree (create --rootfs)
	// rather than a NixOS root nixcell made: it is not prepared, and it is
	// owned by the host's IDs, so an unprivileged container sees it
	// through an idmapped mount (host root's files are its root's).
	PlainRoot bool
	// Ephemeral containers boot RootFS under an overlay whose upper layer
	// is a fresh tmpfs: their writes to the root vanish when they stop.
	Ephemeral bool
	// CgroupPath is the container's absolute cgroup path, the same in every
	// hierarchy, made and removed by the runtime. Unused when SystemdSlice
	// is set.
	CgroupPath string
	// SystemdSlice, on a systemd host with cgroup v2, has systemd make the
	// container's cgroup instead: a scope of its own, SCOPE-NAME.scope
	// with Delegate=yes, in this slice (e.g. "nixcell.slice"), as runc's
	// systemd driver does, so systemd knows it, never moves or kills its
	// processes, and removes it when they are gone.
	SystemdSlice, SystemdScopePrefix string
	// IDs is the host range the container's user namespace maps 0..Size-1
	// to. Size 0 means privileged: no user namespace, container root is host
	// root.
	IDs IDRange
	// ProfileDir is the host directory mounted read-only at
	// /nix/var/nix/profiles inside: the container's generations, which the
	// host manages. UserProfilesDir (at /nix/var/nix/profiles/per-user) and
	// GCRootsDir (at /nix/var/nix/gcroots) are the container's own, owned by
	// its range. All empty means the container gets none of the host's Nix
	// directories (a plain root).
	ProfileDir, UserProfilesDir, GCRootsDir string
	// StorePaths, when not nil, is all the container sees of /nix/store
	// (its system's closure) instead of the whole store.
	StorePaths []string
	// ClosureViewDir keeps the mount points of that view between starts
	// (see closureView); a directory only the host's root may pass.
	ClosureViewDir string
	// Binds are host paths mounted inside; Tmpfs are paths inside that get
	// an empty tmpfs. Both are sorted by destination.
	Binds []Bind
	Tmpfs []string
	// Init is the path, inside the container, of the program to run as PID
	// 1, and InitArgs its arguments (systemd takes systemd.unit= and the
	// like there, as from a kernel command line).
	Init     string
	InitArgs []string
	// ConsoleLog receives what the init writes to its console (see
	// console_linux.go); ConsoleLogSize caps what it keeps, in ConsoleLog
	// and ConsoleLog.1 (0: DefaultConsoleLogSize). How the init ended is
	// kept beside it (exit_linux.go).
	ConsoleLog     string
	ConsoleLogSize uint64
	// ConsoleAgent is the instance's console agent, which keeps a detached
	// container's console while it runs.
	ConsoleAgent console.Agent
	// UUID is the container's stable ID, given to the init as
	// $container_uuid and in /run/host/container-uuid.
	UUID string
	// Systemd says the init is systemd (directly, or a script that execs
	// it, as NixOS's stage 2 does). It reports when it has booted (READY=1
	// on $NOTIFY_SOCKET); an init that does not counts as ready as soon as
	// it runs.
	Systemd bool
	// ReadyTimeout, when positive, makes Start wait until the container is
	// ready, for at most this long.
	ReadyTimeout time.Duration
	// Env is added to the init's environment.
	Env []string
	// Stdout and Stderr, when set, receive a detached init's output, and
	// its /dev/console is ConsoleLog, a file (see fileConsole). They are
	// handed to the init as they are, so they outlive the caller (Nomad's
	// log FIFOs).
	Stdout, Stderr *os.File
	// HostNetwork shares the host's network namespace instead of creating
	// one.
	HostNetwork bool
	// NetNS is the path of an existing network namespace to join instead
	// of creating one (a Nomad allocation's); whoever made it configures
	// it.
	NetNS string
	// BeforeInit, if set, runs after the container's namespaces exist and
	// before its init program starts, with the init's host PID: the host
	// configures the container's network there.
	BeforeInit func(pid int) error
	// Trace, when not nil, is told where each phase of a start ends.
	Trace *trace.Trace
	// Limits cap its resources; SetLimits changes them while it runs.
	Limits Limits
	// Devices are host device nodes it may use besides the standard ones.
	Devices []Device
	// DeviceDir holds an unprivileged container's copies of Devices; it
	// must be on a host file system that is not mounted nodev.
	DeviceDir string

	// restore, set by Restore, brings the init back from a CRIU
	// checkpoint instead of starting it (checkpoint_linux.go).
	restore *RestoreFrom
	// attach runs BeforeInit during a start (attach_linux.go).
	attach *attachment
}

// Bind is a host path mounted into the container. By default it is a
// plain bind: the container's IDs are its range's on the host, so what its
// root writes there belongs to the range's first ID, and host IDs outside
// the range appear as nobody. A read-only one stays read-only (the flag is
// locked).
type Bind struct {
	// Source is an absolute host path without symbolic links; one with a
	// link is refused, since a container that can write a parent
	// directory could have planted it.
	Source, Destination string
	ReadOnly            bool
	// Create makes a missing Source (mode 0755; owned by the container's
	// root when it is a read-write plain bind, by the host's root
	// otherwise) instead of failing.
	Create bool
	// HostIDs makes a read-write bind idmapped with the container's
	// mapping: the host's IDs appear as themselves inside, and the
	// container's root writes as the host's root. Host users who can reach
	// Source could then run setuid-root programs the container plants.
	HostIDs bool
}

// MissingHostPathError is a bind mount whose host path does not exist.
type MissingHostPathError struct {
	Destination, HostPath string
}

func (e *MissingHostPathError) Is(target error) bool { return target == fault.Invalid }

func (e *MissingHostPathError) Error() string {
	return fmt.Sprintf("bind mount %s: host path %s does not exist; create it or set create = true", e.Destination, e.HostPath)
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

// config builds the libcontainer configuration, and returns with it the
// host mounts to stage before libcontainer runs (see hostMounts).
func (c *Container) config() (*configs.Config, []hostMount, error) {
	const (
		noExec = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
		tmp    = unix.MS_NOSUID | unix.MS_NODEV
	)
	mounts := []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: noExec},
		{Source: c.devDir(), Destination: "/dev", Device: "bind", Flags: unix.MS_BIND | unix.MS_REC},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: noExec, Data: "mode=1777,size=65536k"},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: noExec},
		c.sysMount(noExec),
	}
	if c.fileConsole() {
		mounts = append(mounts, &configs.Mount{Source: c.ConsoleLog, Destination: "/dev/console", Device: "bind", Flags: unix.MS_BIND | noExec})
	}
	if unifiedMount() == "/sys/fs/cgroup" && c.HostNetwork && !c.Privileged() {
		// /sys is the host's here (sysMount), so /sys/fs/cgroup is the
		// host's cgroup2 mount, on which the kernel refuses to mount
		// cgroup2 again (EBUSY: the same file system on the same mount
		// point); a tmpfs goes between.
		mounts = append(mounts, &configs.Mount{Source: "tmpfs", Destination: "/sys/fs/cgroup", Device: "tmpfs", Flags: noExec, Data: "mode=755"})
	}
	if unifiedMount() != "" {
		// Mounted inside the container's cgroup namespace: its root is the
		// container's own (delegated) cgroup.
		mounts = append(mounts, &configs.Mount{Source: "cgroup2", Destination: "/sys/fs/cgroup", Device: "cgroup2", Flags: noExec})
	}
	mounts = append(mounts,
		&configs.Mount{Source: "tmpfs", Destination: "/run", Device: "tmpfs", Flags: tmp | unix.MS_STRICTATIME, Data: "mode=755"},
		&configs.Mount{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: tmp | unix.MS_STRICTATIME, Data: "mode=1777"},
		&configs.Mount{Source: filepath.Join(c.HostDir, "host"), Destination: "/run/host", Device: "bind", Flags: unix.MS_BIND | unix.MS_RDONLY | noExec},
	)
	if c.StorePaths != nil {
		// Its submounts are idmapped already, and locked: they were made
		// in the private mount namespace the start runs in.
		mounts = append(mounts, &configs.Mount{Source: c.closureStore(), Destination: "/nix/store", Device: "bind",
			Flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV})
	}
	// Host mounts: the Nix directories first, then the bind mounts and
	// tmpfs mounts in destination order (a parent before what it holds),
	// then the device copies.
	hostMounts := c.hostMounts()
	extraRules, deviceMounts, err := c.extraDevices()
	if err != nil {
		return nil, nil, err
	}
	hostMounts = append(hostMounts, deviceMounts...)
	type byDest struct {
		dest string
		m    *configs.Mount
	}
	var user []byDest
	var devices []*configs.Mount
	for i, m := range hostMounts {
		lm := m.libcontainerMount(c.stagedPath(i))
		switch m.kind {
		case userBind:
			user = append(user, byDest{m.dest, lm})
		case deviceCopy:
			devices = append(devices, lm)
		default:
			mounts = append(mounts, lm)
		}
	}
	for _, t := range c.Tmpfs {
		// libcontainer gives the tmpfs the mode of the directory it
		// covers (1777 when there is none).
		user = append(user, byDest{t, &configs.Mount{Source: "tmpfs", Destination: t, Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV}})
	}
	slices.SortStableFunc(user, func(a, b byDest) int { return strings.Compare(a.dest, b.dest) })
	for _, u := range user {
		mounts = append(mounts, u.m)
	}
	mounts = append(mounts, devices...)

	var rules []*devconfig.Rule
	for _, d := range specconv.AllowedDevices {
		rules = append(rules, &d.Rule)
	}
	rules = append(rules, extraRules...)
	caps := grantedCapabilities()
	resources := &cgroups.Resources{Devices: rules}
	// systemd gives a scope its own defaults (TasksMax is 15% of the
	// host's PIDs): "no limit" is said outright there.
	c.Limits.apply(resources, c.SystemdSlice != "")
	namespaces := configs.Namespaces{
		{Type: configs.NEWNS}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
		{Type: configs.NEWPID}, {Type: configs.NEWCGROUP},
	}
	var networks []*configs.Network
	switch {
	case c.NetNS != "":
		namespaces = append(namespaces, configs.Namespace{Type: configs.NEWNET, Path: c.NetNS})
	case !c.HostNetwork:
		namespaces = append(namespaces, configs.Namespace{Type: configs.NEWNET})
		networks = []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}}
	}
	cfg := &configs.Config{
		Rootfs:     c.bootRoot(),
		Labels:     []string{hostDirLabel + "=" + c.HostDir, consoleDirLabel + "=" + filepath.Dir(c.ConsoleLog), criuConfigLabel + "=" + c.criuConfig()},
		Hooks:      c.hooks(),
		Hostname:   c.Name,
		Namespaces: namespaces,
		Capabilities: &configs.Capabilities{
			Bounding: caps, Effective: caps, Permitted: caps,
		},
		Cgroups: c.cgroup(resources),
		Seccomp: seccompFilter(),
		// None: /dev is a bind (stageDev), on which libcontainer makes
		// no nodes, and its nodes are no mounts (for CRIU).
		Devices: nil,
		Mounts:  mounts,
		MaskPaths: []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		},
		ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		Networks:      networks,
	}
	if !c.Privileged() {
		cfg.Namespaces = append(cfg.Namespaces, configs.Namespace{Type: configs.NEWUSER})
		cfg.UIDMappings = c.idMaps()
		cfg.GIDMappings = c.idMaps()
	}
	return cfg, hostMounts, nil
}

// hostDirLabel records HostDir in libcontainer's state, so that Cleanup
// finds it.
const hostDirLabel = "nixcell.hostdir"

func (c *Container) idMaps() []configs.IDMap {
	return []configs.IDMap{{ContainerID: 0, HostID: int64(c.IDs.Start), Size: int64(c.IDs.Size)}}
}

// sysMount is /sys, read-only. A user namespace may mount sysfs only with a
// network namespace of its own; with the host's network (or a joined one,
// which the host's user namespace owns) it gets a read-only bind of the
// host's /sys instead.
func (c *Container) sysMount(flags int) *configs.Mount {
	if (c.HostNetwork || c.NetNS != "") && !c.Privileged() {
		return &configs.Mount{Source: "/sys", Destination: "/sys", Device: "bind", Flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | flags}
	}
	return &configs.Mount{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: flags | unix.MS_RDONLY}
}

// cgroup is the container's cgroup configuration for libcontainer.
func (c *Container) cgroup(resources *cgroups.Resources) *cgroups.Cgroup {
	if c.SystemdSlice != "" {
		return &cgroups.Cgroup{Systemd: true, Parent: c.SystemdSlice, ScopePrefix: c.SystemdScopePrefix, Name: c.Name, Resources: resources}
	}
	return &cgroups.Cgroup{Path: c.CgroupPath, Resources: resources}
}
