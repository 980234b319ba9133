package runtime

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capabilityBits numbers the capabilities a container may get.
var capabilityBits = map[string]uint{
	"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE,
	"CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_FOWNER": unix.CAP_FOWNER,
	"CAP_FSETID": unix.CAP_FSETID, "CAP_IPC_OWNER": unix.CAP_IPC_OWNER, "CAP_KILL": unix.CAP_KILL,
	"CAP_LEASE": unix.CAP_LEASE, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_MKNOD": unix.CAP_MKNOD, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_SETUID": unix.CAP_SETUID, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
}

// grantedCapabilities is the container's capability set: nspawn's default
// (capabilities) less those outside nixcell's own bounding set. No process
// can regain a capability its bounding set lacks, and a container without
// a user namespace cannot even be started with one (capset fails), so they
// are left out, as systemd-nspawn leaves them out.
func grantedCapabilities() []string {
	bounding, ok := ownBoundingSet()
	if !ok {
		return capabilities
	}
	var granted []string
	for _, c := range capabilities {
		if bit, known := capabilityBits[c]; !known || bounding&(1<<bit) != 0 {
			granted = append(granted, c)
		}
	}
	return granted
}

// ownBoundingSet reads this process's capability bounding set.
func ownBoundingSet() (uint64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}
