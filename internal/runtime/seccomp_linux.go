package runtime

import (
	goruntime "runtime"

	"github.com/nixcell/nixcell/internal/kernel"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are the system calls that fail with EPERM in every
// container, privileged or not, for the init and every exec'd process.
//
// The filter is a deny list: everything else is allowed, because a NixOS
// system runs arbitrary software (systemd, nix, databases) whose needs an
// allow list would have to guess. The choices follow systemd-nspawn's
// default filter (src/nspawn/nspawn-seccomp.c), which excludes these groups
// from the container's allow list unless the matching capability is kept:
// each entry here is host-global state that no namespace isolates, or an
// interface known mostly from container escapes. Most also need a
// capability the container's bounding set lacks; the filter is the second
// wall, and it is the only one in a privileged container whose root is the
// host's root.
//
// Deliberately allowed, as nspawn allows them: mount and the new mount API,
// unshare, setns and clone of namespaces (systemd sandboxes services with
// them; a user namespace cannot map the host's root), ptrace, kcmp and
// process_vm_* (confined to the container's PID namespace), reboot (in a
// PID namespace it ends the container's init, not the host), sethostname,
// vhangup, pkey_* and the mlock family (process-local; locked memory is
// charged to the container's memory cgroup).
//
// Where nixcell differs from nspawn: userfaultfd and io_uring are denied
// (nspawn allows both). Both have been the key to many kernel exploits, and
// their users (CRIU, QEMU post-copy migration, io_uring-aware servers) fall
// back to other interfaces when they get EPERM; Docker's default profile
// denies them for the same reason.
var deniedSyscalls = []struct {
	why   string
	names []string
}{
	{"kernel modules: code in the host's kernel", []string{
		"init_module", "finit_module", "delete_module",
		"create_module", "query_module", "get_kernel_syms"}},
	{"kexec: replacing the host's kernel", []string{"kexec_load", "kexec_file_load"}},
	{"swap: host-wide swap devices", []string{"swapon", "swapoff"}},
	{"the clock: the host's time is not namespaced", []string{
		"settimeofday", "stime", "clock_settime", "clock_settime64",
		"adjtimex", "clock_adjtime", "clock_adjtime64"}},
	{"raw I/O ports and PCI configuration space", []string{
		"iopl", "ioperm", "pciconfig_iobase", "pciconfig_read", "pciconfig_write"}},
	{"the kernel keyring: not namespaced", []string{"add_key", "keyctl", "request_key"}},
	{"BPF programs and perf events: host-wide kernel state and information", []string{
		"bpf", "perf_event_open", "lookup_dcookie"}},
	{"the kernel log: the host's messages", []string{"syslog"}},
	{"file handles: open_by_handle_at opens any inode of a file system (the \"shocker\" escape)", []string{
		"open_by_handle_at"}},
	{"fanotify: watching whole file systems, the host's included", []string{"fanotify_init", "fanotify_mark"}},
	{"process accounting and disk quotas: host-wide", []string{"acct", "quotactl", "quotactl_fd"}},
	{"exploit primitives with fallbacks (see above)", []string{
		"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register"}},
	{"CPU emulation: old, little-used kernel paths", []string{
		"modify_ldt", "subpage_prot", "switch_endian", "vm86", "vm86old"}},
	{"obsolete interfaces", []string{"_sysctl", "nfsservctl", "uselib", "ustat", "sysfs", "bdflush"}},
}

// compatArchitectures are the other system call ABIs a process of the
// host's architecture can use (32-bit x86 through int 0x80, for example);
// they are filtered too, so a denied call cannot slip through another
// table.
var compatArchitectures = map[string][]string{
	"amd64": {"x86", "x32"},
	"arm64": {"arm"},
}

// seccompFilter is the filter every container process runs under: the
// denied calls fail with EPERM, and audit sockets fail as if the kernel had
// no audit support (audit does not work in a container, and userspace takes
// EAFNOSUPPORT to mean "audit disabled", as under systemd-nspawn).
func seccompFilter() *configs.Seccomp {
	eperm := uint(unix.EPERM)
	eafnosupport := uint(unix.EAFNOSUPPORT)
	s := &configs.Seccomp{
		DefaultAction: configs.Allow,
		Architectures: compatArchitectures[goruntime.GOARCH],
	}
	for _, group := range deniedSyscalls {
		for _, name := range group.names {
			s.Syscalls = append(s.Syscalls, &configs.Syscall{Name: name, Action: configs.Errno, ErrnoRet: &eperm})
		}
	}
	s.Syscalls = append(s.Syscalls, &configs.Syscall{
		Name: "socket", Action: configs.Errno, ErrnoRet: &eafnosupport,
		Args: []*configs.Arg{
			{Index: 0, Value: unix.AF_NETLINK, Op: configs.EqualTo},
			{Index: 2, Value: unix.NETLINK_AUDIT, Op: configs.EqualTo},
		},
	})
	return s
}

// checkSeccomp fails when the filter cannot be installed: a binary built
// without libseccomp (libcontainer would refuse every container with a
// less helpful message), or a kernel without seccomp (its
// /proc/PID/status has no Seccomp line).
func checkSeccomp() error {
	if !seccomp.Enabled {
		return &UnsupportedFeatureError{Feature: "this nixcell was built without seccomp support",
			Need: "build it with cgo and -tags seccomp (libseccomp-dev installed)"}
	}
	return kernel.SeccompFilters()
}

// SeccompBuilt says whether this nixcell can install seccomp filters: it
// was built with libseccomp (cgo, -tags seccomp) and the kernel has them.
func SeccompBuilt() error { return checkSeccomp() }
