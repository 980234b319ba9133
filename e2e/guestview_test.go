package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

var uuidLine = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$`)

// TestBootID gives each start of a container a boot ID of its own, as
// systemd-nspawn does: not the host's, a new one at every start, the same
// for every process of one boot, and read-only.
func TestBootID(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("boot")
	in.create(name, `{ }`)
	hostID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{string(hostID): true}
	for i := 0; i < 3; i++ {
		in.must("start", name)
		id := in.exec(name, "cat", "/proc/sys/kernel/random/boot_id")
		if !uuidLine.MatchString(id) {
			t.Fatalf("boot ID of start %d: %q", i+1, id)
		}
		if seen[id] {
			t.Errorf("start %d has the boot ID %q of the host or of an earlier start", i+1, strings.TrimSpace(id))
		}
		seen[id] = true
		if again := in.exec(name, "cat", "/proc/sys/kernel/random/boot_id"); again != id {
			t.Errorf("the boot ID changed within one boot: %q, then %q", id, again)
		}
		if r := in.run("exec", name, "--", "sh", "-c", "echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id"); r.code == 0 {
			t.Errorf("the container's root could write its boot ID")
		}
		in.must("stop", name)
	}
}

// TestProcSysNet makes /proc/sys/net writable in a container with a
// network namespace of its own, as systemd-nspawn does: its network
// sysctls are its own, so setting one changes nothing on the host. The
// rest of /proc/sys stays read-only, and so does /proc/sys/net of a
// container on the host's network.
func TestProcSysNet(t *testing.T) {
	in := newInstance(t)
	own, shared := testutil.Name("ownnet"), testutil.Name("hostnet")
	in.create(own, `{ }`)
	in.create(shared, `{ network.hostNetwork = true; configuration = { }; }`)
	in.must("start", own)
	in.must("start", shared)
	hostTTL, err := os.ReadFile("/proc/sys/net/ipv4/ip_default_ttl")
	if err != nil {
		t.Fatal(err)
	}

	if out := in.exec(own, "sysctl", "-w", "net.ipv4.ip_forward=1"); out != "net.ipv4.ip_forward = 1\n" {
		t.Errorf("sysctl -w net.ipv4.ip_forward=1: %q", out)
	}
	in.exec(own, "sysctl", "-w", "net.ipv4.ip_default_ttl=99")
	if got := in.exec(own, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_default_ttl"); got != "1\n99\n" {
		t.Errorf("the container's ip_forward and ip_default_ttl after setting them: %q", got)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_default_ttl"); string(now) != string(hostTTL) {
		t.Errorf("the container's sysctl changed the host's ip_default_ttl: %q, was %q", now, hostTTL)
	}
	if r := in.run("exec", own, "--", "sysctl", "-w", "kernel.domainname=x"); r.code == 0 {
		t.Errorf("/proc/sys/kernel is writable: %s", r)
	}
	if r := in.run("exec", shared, "--", "sysctl", "-w", "net.ipv4.ip_default_ttl=99"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("sysctl -w in a container on the host's network: %s", r)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_default_ttl"); string(now) != string(hostTTL) {
		t.Errorf("a container on the host's network changed the host's ip_default_ttl: %q, was %q", now, hostTTL)
	}
}
