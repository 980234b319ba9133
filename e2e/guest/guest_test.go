package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// e2eTests are the end-to-end tests (package e2e) that run inside the
// guest: those whose outcome can depend on the host's cgroup version, init
// or kernel (the lifecycle, the generations, the limits, devices, mounts,
// networking). Tests of input checking are left to the main tier, and the
// attack tests need Go in the guest to build their probe.
var e2eTests = []string{
	// lifecycle and generations
	// (readiness, autostart and reboots under systemd are TestSystemdHost's)
	// (and nixcell run is the units' ExecStart there; the generation
	// failure cases do not depend on the host)
	"TestCreateForms", "TestLifecycle", "TestLogin", "TestDestroyLeavesNoTrace",
	"TestUpdateRunningInPlace",
	// cgroup v2: limits, statistics, the device controller (eBPF on v2)
	"TestLimitsUpdateLive", "TestStats", "TestMemoryHogOOMKilled", "TestForkBombStoppedByPidsLimit",
	"TestAllowedDevices",
	// kernel 6.1: mounts and networking
	"TestBindMounts", "TestEphemeral", "TestClosureStore", "TestPlainRootFS",
	"TestNetworkNATAndForwards", "TestNetworkModes",
	// copies of a running container freeze it: cgroup v2's cgroup.freeze
	// on a systemd scope (TestFailpoints' kills need Go in the guest)
	"TestCloneRunning", "TestSnapshotRestore",
	// limits.disk on ext4 project quotas: this machine's kernel has no
	// quota format, so the main tier tests it on btrfs only
	"TestDiskQuota",
}

// selectedTests are e2eTests, or the names NIXCELL_GUEST_TESTS lists
// (separated by commas or spaces).
func selectedTests() []string {
	if s := os.Getenv("NIXCELL_GUEST_TESTS"); s != "" {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	}
	return e2eTests
}

// binDir is where the guest sees the binaries built on the host.
const binDir = "/mnt/nixcell-bin"

// TestInGuest boots the systemd + cgroup v2 test host and runs the
// end-to-end tests in it, each as its own subtest, with nixcell and the
// tests built on this machine and the repository shared at the same path
// (the tests find the stand-in nixpkgs there), then powers it off
// (TestSystemdHost reboots one).
func TestInGuest(t *testing.T) {
	img := BuildImage(t)
	bin := buildBinaries(t)
	root, err := filepath.Abs(testutil.ProjectRoot())
	if err != nil {
		t.Fatal(err)
	}
	vm := Boot(t, img, Options{Shares: []Share{{Host: root, Guest: root}, {Host: bin, Guest: binDir}}})

	t.Run("host", func(t *testing.T) {
		// The monitor that a failure's diagnosis asks.
		if got := vm.monitor("info status"); got != "VM status: running" {
			t.Errorf("qemu's monitor says %q", got)
		}
		if got := cpuPlaces(vm.monitor("info registers -a")); !strings.HasPrefix(got, "CPU0 RIP=") || !strings.Contains(got, "; CPU1 RIP=") {
			t.Errorf("the places of the guest's CPUs: %s", got)
		}
		if got := vm.Must(t, "uname -r"); !strings.HasPrefix(got, "6.1.") {
			t.Errorf("guest kernel %q, want 6.1", got)
		}
		if got := vm.Must(t, "cat /proc/1/comm"); got != "systemd\n" {
			t.Errorf("guest PID 1 is %q", got)
		}
		if got := vm.Must(t, "stat -f -c %T /sys/fs/cgroup"); got != "cgroup2fs\n" {
			t.Errorf("guest /sys/fs/cgroup is %q, want cgroup2fs (unified)", got)
		}
		got := vm.Must(t, "cat /sys/fs/cgroup/cgroup.controllers")
		for _, c := range []string{"cpu", "memory", "pids", "io", "cpuset"} {
			if !strings.Contains(" "+strings.TrimSpace(got)+" ", " "+c+" ") {
				t.Errorf("guest cgroup2 controllers %q lack %s", got, c)
			}
		}
		// What tests of the host's systemd will use.
		vm.Must(t, "systemctl is-active systemd-journald && journalctl -b -n 1 --no-pager && machinectl list --no-pager")
	})

	ci := "false"
	if testutil.InCI() {
		ci = "true"
	}
	testLine := regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): .*$`)
	for _, name := range selectedTests() {
		if vm.lost {
			// Each would wait for ssh in vain; the first failure's
			// diagnosis says what state the guest is in.
			t.Fatalf("the guest stopped answering; %s and the tests after it did not run", name)
		}
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			r := vm.Run(t, fmt.Sprintf("cd /tmp && CI=%s NIXCELL_BIN=%s/nixcell timeout -s KILL 11m %s/e2e.test -test.run '^%s$' -test.v -test.count=1 -test.timeout 10m 2>&1",
				ci, binDir, binDir, name))
			took := time.Since(start).Round(100 * time.Millisecond)
			if r.Code != 0 {
				t.Errorf("%s in the guest: exit %d after %v\n%s", name, r.Code, took, r.Stdout)
				t.Logf("guest kernel log (last lines):\n%s", lastLines(vm.Run(t, "dmesg").Stdout, 20))
				return
			}
			t.Logf("%s passed in the guest in %v:\n%s", name, took, strings.Join(testLine.FindAllString(r.Stdout, -1), "\n"))
		})
	}

	vm.PowerOff(t)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// buildBinaries builds nixcell and the end-to-end test binary for the
// guest, which runs the same Debian 12 as this machine, once per process.
func buildBinaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = build() })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func build() (string, error) {
	dir, err := os.MkdirTemp("", "nixcell-guest-bin-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	for _, args := range [][]string{
		{"build", "-tags", "seccomp", "-o", filepath.Join(dir, "nixcell"), "./cmd/nixcell"},
		{"test", "-c", "-tags", "seccomp", "-o", filepath.Join(dir, "e2e.test"), "./e2e"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = testutil.ProjectRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return dir, nil
}

// TestCPUPlaces reads the monitor's registers as qemu prints them for a
// 64-bit guest: one line of places per sample in a failure's diagnosis.
func TestCPUPlaces(t *testing.T) {
	registers := "info registers -a\r\n\r\nCPU#0\r\nRAX=0000000000000000 RBX=ffffffff82613940\r\n" +
		"RIP=ffffffff81b2f1ce RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\nES =0000\r\n" +
		"CPU#1\r\nRAX=0000000000000001\r\nRIP=00007f3a1c2b9e0d RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\r\n"
	want := "CPU0 RIP=ffffffff81b2f1ce CPL=0 HLT=1; CPU1 RIP=00007f3a1c2b9e0d CPL=3 HLT=0"
	if got := cpuPlaces(registers); got != want {
		t.Errorf("cpuPlaces:\n got %s\nwant %s", got, want)
	}
	if got := cpuPlaces("Could not open\r\n(qemu)"); !strings.HasPrefix(got, "no registers") {
		t.Errorf("cpuPlaces of no registers: %s", got)
	}
}
