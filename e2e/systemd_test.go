package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/testutil"
)

// debianCache is where the Debian root file system for the systemd test
// is kept between runs (debootstrap takes ≈ 35 s and 250 MB).
const debianCache = "/var/cache/nixcell-test/debian-bookworm"

// debootstrapArgs make a Debian 12 with systemd as its init.
var debootstrapArgs = []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2", "bookworm"}

// unreachableArchive are debootstrap's (and wget's) words for a package
// archive it cannot reach.
var unreachableArchive = []string{
	"Failed getting release file", "Couldn't download", "unable to resolve host",
	"Temporary failure in name resolution", "Network is unreachable", "Connection refused", "Connection timed out",
}

// debianRoot returns a Debian 12 root file system whose init is systemd,
// made with debootstrap on first use and cached in debianCache. When the
// Debian archive cannot be reached the test is skipped (failed under CI,
// which reaches it through apt's mirror).
func debianRoot(t *testing.T) string {
	t.Helper()
	ready := func() bool {
		fi, err := os.Stat(filepath.Join(debianCache, "lib", "systemd", "systemd"))
		return err == nil && fi.Mode().IsRegular()
	}
	if ready() {
		return debianCache
	}
	testutil.RequiresCommands(t, "debootstrap")
	if err := os.MkdirAll(filepath.Dir(debianCache), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	lock, err := lockfile.Lock(ctx, debianCache+".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if ready() { // made by someone else while we waited
		return debianCache
	}
	tmp := fmt.Sprintf("%s.tmp-%d", debianCache, os.Getpid())
	defer os.RemoveAll(tmp)
	t.Logf("making %s with debootstrap %s (once; later runs reuse it)", debianCache, strings.Join(debootstrapArgs, " "))
	start := time.Now()
	out, err := exec.CommandContext(ctx, "debootstrap", append(debootstrapArgs, tmp)...).CombinedOutput()
	if err != nil {
		for _, s := range unreachableArchive {
			if strings.Contains(string(out), s) {
				testutil.Skip(t, fmt.Sprintf("the Debian archive is unreachable, so debootstrap cannot make the systemd test's root file system (%s)", s))
			}
		}
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	_ = os.RemoveAll(debianCache) // an incomplete one
	if err := os.Rename(tmp, debianCache); err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap took %v", time.Since(start).Round(time.Second))
	return debianCache
}

// TestSystemd boots Debian 12's systemd 252 as the init of an unprivileged
// container and checks the container contract: start --wait returns on
// READY=1, the system comes up, and stop shuts it down cleanly.
func TestSystemd(t *testing.T) {
	in := newInstance(t)
	root := debianRoot(t)
	name := testutil.Name("debian")
	// Ephemeral, so the cached tree stays as debootstrap made it.
	in.must(append([]string{"create", name, "--rootfs", root, "--init", "/lib/systemd/systemd", "-c", "{ ephemeral = true; }"}, nixArgs...)...)

	start := time.Now()
	r := in.run("start", "--wait", "--timeout", "120s", name)
	if r.code != 0 || r.stderr != "" {
		log, _ := os.ReadFile(in.store.ConsoleLog(name))
		t.Fatalf("start --wait: %s\nconsole:\n%s", r, log)
	}
	t.Logf("start --wait returned after %v", time.Since(start).Round(time.Millisecond))
	// READY=1 comes once systemd has finished starting up, so at this
	// point it no longer says "starting".
	if st := in.run("exec", name, "--", "systemctl", "is-system-running"); st.stdout != "running\n" && st.stdout != "degraded\n" {
		t.Errorf("right after start --wait, systemd is %q: start --wait did not wait for READY=1", st.stdout)
	}

	if got := in.exec(name, "cat", "/proc/1/comm"); got != "systemd\n" {
		t.Errorf("PID 1 is %q", got)
	}
	st := in.run("exec", name, "--", "systemctl", "is-system-running", "--wait")
	switch st.stdout {
	case "running\n":
	case "degraded\n":
		failed := in.run("exec", name, "--", "systemctl", "--failed", "--no-pager", "--no-legend")
		t.Logf("systemd is degraded; failed units:\n%s", failed.stdout)
	default:
		failed := in.run("exec", name, "--", "systemctl", "--failed", "--no-pager")
		t.Errorf("systemctl is-system-running --wait: %s\n%s", st, failed.stdout)
	}
	t.Run("container-interface", func(t *testing.T) {
		if got := in.exec(name, "systemd-detect-virt", "--container"); got != "container-other\n" {
			t.Errorf("systemd-detect-virt --container = %q", got)
		}
		// systemd moved itself into init.scope of its delegated hierarchy.
		if got := in.exec(name, "cat", "/proc/1/cgroup"); !strings.Contains(got, "0::/init.scope\n") {
			t.Errorf("PID 1's cgroups:\n%s", got)
		}
		if got := in.exec(name, "systemctl", "show", "--property=Virtualization", "--value"); got != "container-other\n" {
			t.Errorf("Virtualization = %q", got)
		}
		if got := in.exec(name, "ip", "-o", "link", "show", "lo"); !strings.Contains(got, "lo:") {
			t.Errorf("ip link: %q", got)
		}
	})

	start = time.Now()
	r = in.run("stop", "--timeout", "60s", name)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %s (systemd should halt on SIGRTMIN+3 and exit)", r)
	}
	t.Logf("clean stop took %v", time.Since(start).Round(time.Millisecond))
	if st := in.info(name).State; st != "stopped" {
		t.Errorf("state after stop: %s", st)
	}
}
