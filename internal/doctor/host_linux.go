package doctor

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/kernel"
)

// Host is every check of the host, in the order doctor prints them.
func Host() []Check {
	return []Check{
		Root, Kernel, UserNamespaces, IdmappedStore, Openat2, Seccomp, Overlay,
		Cgroups, Systemd, Nftables, BridgeNetfilter, SubordinateIDs,
		Commands("nix-tools", "install Nix (Debian: apt-get install nix-bin)", "nix-build", "nix-env", "nix-store", "nix-instantiate"),
		NixStore,
	}
}

// Kernel checks the release: idmapped mounts need 5.12 (ext4, xfs), the
// releases users run start at 5.15.
var Kernel = Check{Name: "kernel", Run: func() Result {
	r := kernel.Running()
	switch {
	case !r.AtLeast(5, 12):
		return fail("use Linux 5.12 or later (idmapped mounts)", "Linux %s", r)
	case !r.AtLeast(6, 3):
		return ok("Linux %s (idmapped mounts of tmpfs need 6.3: a plain root or a writeAsHostRoot bind mount on tmpfs is refused)", r)
	}
	return ok("Linux %s", r)
}}

// UserNamespaces checks that unprivileged containers can have their own.
var UserNamespaces = Check{Name: "user-namespaces", Run: func() Result {
	if err := kernel.UserNamespaces(); err != nil {
		return fail(err.(*kernel.UnsupportedError).Need, "%s", err.(*kernel.UnsupportedError).Feature)
	}
	return ok("available")
}}

// IdmappedStore makes an idmapped mount of /nix/store, as every
// unprivileged NixOS container's start does.
var IdmappedStore = Check{Name: "idmapped-mounts", Run: func() Result {
	if _, err := os.Stat("/nix/store"); err != nil {
		return fail("install Nix (Debian: apt-get install nix-bin)", "no /nix/store")
	}
	if err := kernel.ProbeIdmap("/nix/store"); err != nil {
		var u *kernel.UnsupportedError
		if errors.As(err, &u) {
			return fail(u.Need, "%s", u.Feature)
		}
		return fail("", "probing an idmapped mount of /nix/store: %v", err)
	}
	return ok("an idmapped mount of /nix/store works")
}}

// Openat2 checks the system call host paths are opened with.
var Openat2 = Check{Name: "openat2", Run: func() Result {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		return fail("use Linux 5.6 or later", "openat2: %v", err)
	}
	unix.Close(fd)
	return ok("available")
}}

// Seccomp checks the kernel's seccomp filters (whether this nixcell was
// built with seccomp is the runtime's check).
var Seccomp = Check{Name: "seccomp", Run: func() Result {
	if err := kernel.SeccompFilters(); err != nil {
		return fail(err.(*kernel.UnsupportedError).Need, "%s", err.(*kernel.UnsupportedError).Feature)
	}
	return ok("filters available")
}}

// Overlay checks overlayfs, which ephemeral containers need.
var Overlay = Check{Name: "overlayfs", Run: func() Result {
	if err := kernel.Overlay(); err != nil {
		return warn("load the overlay module (modprobe overlay)", "no overlay file system: ephemeral containers cannot start")
	}
	return ok("available")
}}

// Cgroups reports the cgroup layout and the controllers limits need.
var Cgroups = Check{Name: "cgroups", Run: func() Result {
	layout := kernel.Cgroups()
	want := []string{"memory", "cpu", "pids"}
	var missing []string
	switch layout {
	case kernel.CgroupV2:
		data, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		have := strings.Fields(string(data))
		for _, c := range want {
			if !contains(have, c) {
				missing = append(missing, c)
			}
		}
	default:
		for _, c := range want {
			if _, err := os.Stat("/sys/fs/cgroup/" + c); err != nil {
				missing = append(missing, c)
			}
		}
	}
	if len(missing) > 0 {
		return warn("enable the "+strings.Join(missing, ", ")+" controllers", "cgroup %s without %s: those limits cannot apply", layout, strings.Join(missing, ", "))
	}
	if layout == kernel.CgroupV1 {
		return warn("mount cgroup2 (systemd in containers needs it)", "cgroup v1 without cgroup2: systemd inside containers cannot manage its services")
	}
	return ok("cgroup %s with memory, cpu and pids", layout)
}}

// Systemd reports whether the host runs systemd as PID 1, and machined.
var Systemd = Check{Name: "systemd", Run: func() Result {
	comm, _ := os.ReadFile("/proc/1/comm")
	if strings.TrimSpace(string(comm)) != "systemd" {
		return ok("PID 1 is %s, not systemd: containers are not registered with machined, and units are for systemd hosts", strings.TrimSpace(string(comm)))
	}
	if _, err := os.Stat("/run/systemd/machines"); err != nil {
		return ok("PID 1 is systemd; systemd-machined is not running, so containers are not registered as machines")
	}
	return ok("PID 1 is systemd, with systemd-machined")
}}

// Nftables checks that nixcell's firewall tables can be made.
var Nftables = Check{Name: "nftables", Run: func() Result {
	if _, err := exec.LookPath("nft"); err != nil {
		return fail("install nftables (Debian: apt-get install nftables)", "nft is not installed")
	}
	if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil {
		return fail("load the nf_tables module", "nft cannot list tables: %s", strings.TrimSpace(string(out)))
	}
	return ok("nft works")
}}

// BridgeNetfilter reports br_netfilter, which decides whether bridged
// frames also pass the inet family (nixcell's bridge table isolates
// containers either way).
var BridgeNetfilter = Check{Name: "br_netfilter", Run: func() Result {
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		return ok("loaded: bridged frames pass the inet family too; nixcell's rules allow them")
	}
	return ok("not loaded: bridged frames are judged by the bridge family alone")
}}

// SubordinateIDs reports where ID ranges come from.
var SubordinateIDs = Check{Name: "subordinate-ids", Run: func() Result {
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if hasUser(f, "nixcell") {
			continue
		}
		return ok("no nixcell entry in %s: ranges come from 1048576 up, skipping what it delegates to others", f)
	}
	return ok("ranges come from the nixcell entries of /etc/subuid and /etc/subgid")
}}

// NixStore checks the host's Nix directories containers see.
var NixStore = Check{Name: "nix-store", Run: func() Result {
	for _, d := range []string{"/nix/store", "/nix/var/nix/db"} {
		if _, err := os.Stat(d); err != nil {
			return fail("install Nix (Debian: apt-get install nix-bin)", "%s is missing", d)
		}
	}
	if _, err := os.Stat("/nix/var/nix/daemon-socket"); err != nil {
		return warn("mkdir -p /nix/var/nix/daemon-socket (or run nix-daemon)", "/nix/var/nix/daemon-socket is missing: NixOS containers bind it")
	}
	return ok("/nix/store, its database and the daemon socket directory exist")
}}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasUser(path, user string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, _, ok := strings.Cut(s.Text(), ":"); ok && name == user {
			return true
		}
	}
	return false
}
