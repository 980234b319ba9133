package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/testutil"
)

// debootstrapArgs make a Debian 12 with systemd as its init, and
// libpam-systemd, so that logind sees PAM sessions (login's test).
var debootstrapArgs = []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2,libpam-systemd", "bookworm"}

// debianCache is where the Debian root file system for the systemd test
// is kept between runs (debootstrap takes ≈ 35 s and 250 MB), named by a
// hash of how it is made: changed arguments make a new one.
var debianCache = func() string {
	sum := sha256.Sum256([]byte(strings.Join(debootstrapArgs, " ")))
	return "/var/cache/nixcell-test/debian-bookworm-" + hex.EncodeToString(sum[:4])
}()

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
	// An unprivileged container's root writes to its plain root file
	// system as the host's root: nixcell refuses one that host users can
	// reach, as the tree below a 0700 directory is not.
	if err := os.MkdirAll(filepath.Dir(debianCache), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(debianCache), 0o700); err != nil {
		t.Fatal(err)
	}
	if ready() {
		return debianCache
	}
	testutil.RequiresCommands(t, "debootstrap")
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
// READY=1, the system comes up, and stop shuts it down cleanly; and the
// guest's view, as systemd-nspawn gives it: a console (boot messages and a
// getty), the init's arguments, /proc/sys/net its own, a login session
// logind sees, and a boot ID of its own at every start.
func TestSystemd(t *testing.T) {
	in := newInstance(t)
	root := debianRoot(t)
	name := testutil.Name("debian")
	// Ephemeral, so the cached tree stays as debootstrap made it; the
	// journal is kept across boots in a directory of the test's.
	journal := filepath.Join(t.TempDir(), "journal")
	settings := fmt.Sprintf(`{ ephemeral = true; initArgs = [ "systemd.log_level=notice" ];
  bindMounts."/var/log/journal" = { hostPath = %q; isReadOnly = false; create = true; }; }`, journal)
	in.must(append([]string{"create", name, "--rootfs", root, "--init", "/lib/systemd/systemd", "-c", settings}, nixArgs...)...)

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

	t.Run("console", func(t *testing.T) {
		if r := in.run("exec", name, "--", "test", "-c", "/dev/console"); r.code != 0 {
			t.Errorf("/dev/console is not a terminal: %s", r)
		}
		// console-getty.service runs agetty there, as under nspawn.
		var log string
		waitFor(t, 20*time.Second, "the getty's prompt on the console", func() bool {
			data, _ := os.ReadFile(in.store.ConsoleLog(name))
			log = string(data)
			return strings.Contains(log, " login: ")
		})
		for _, want := range []string{"Welcome to", "Debian GNU/Linux 12 (bookworm)", "Reached target", "Console Getty"} {
			if !strings.Contains(log, want) {
				t.Errorf("the console log lacks %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "\r\n") {
			t.Errorf("the console log has terminal line ends")
		}
	})
	t.Run("init-args", func(t *testing.T) {
		if got := in.exec(name, "systemctl", "show", "--property=LogLevel", "--value"); got != "notice\n" {
			t.Errorf("systemd's log level is %q: initArgs did not reach it", got)
		}
	})
	t.Run("sysctl", func(t *testing.T) {
		// Its condition is a writable /proc/sys/net.
		if got := in.exec(name, "systemctl", "show", "--property=ActiveState,ConditionResult", "systemd-sysctl.service"); got != "ActiveState=active\nConditionResult=yes\n" {
			t.Errorf("systemd-sysctl.service: %q", got)
		}
		if r := in.run("exec", name, "--", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); r.code != 0 {
			t.Errorf("setting net.ipv4.ip_forward: %s", r)
		}
	})
	t.Run("login", func(t *testing.T) {
		term := startTerminal(t, in, "login", name)
		term.send("echo shell=$0; loginctl list-sessions --no-legend | grep -c root\n")
		term.expect("shell=/bin/bash")
		term.expect("\n1\r\n")
		// systemd names the host from the tree's /etc/hostname.
		hostname, err := os.ReadFile(filepath.Join(root, "etc", "hostname"))
		if err != nil {
			t.Fatal(err)
		}
		checkTerminal(t, term, strings.TrimSpace(string(hostname)))
	})

	bootID := in.exec(name, "cat", "/proc/sys/kernel/random/boot_id")
	start = time.Now()
	r = in.run("stop", "--timeout", "60s", name)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %s (systemd should halt on SIGRTMIN+3 and exit)", r)
	}
	t.Logf("clean stop took %v", time.Since(start).Round(time.Millisecond))
	if st := in.info(name).State; st != "stopped" {
		t.Errorf("state after stop: %s", st)
	}

	t.Run("run-passes-readiness", func(t *testing.T) {
		msgs, stop := runNotified(t, in, name)
		if msg := nextMessage(t, msgs, 120*time.Second); msg != "READY=1" {
			t.Fatalf("first message to run's service manager: %q", msg)
		}
		if st := in.run("exec", name, "--", "systemctl", "is-system-running"); st.stdout != "running\n" && st.stdout != "degraded\n" {
			t.Errorf("when run reported READY=1, systemd was %q", st.stdout)
		}
		if code := stop(); code != 0 {
			t.Errorf("run exited %d after SIGTERM", code)
		}
	})

	t.Run("boot-ids", func(t *testing.T) {
		// Three boots: the start, the run, and this start.
		in.must("start", "--wait", "--timeout", "120s", name)
		defer in.must("stop", "--timeout", "60s", name)
		if id := in.exec(name, "cat", "/proc/sys/kernel/random/boot_id"); id == bootID {
			t.Errorf("the boot ID %q of the first boot again", strings.TrimSpace(id))
		}
		var boots []string
		for _, line := range strings.Split(in.exec(name, "journalctl", "--list-boots", "--no-pager"), "\n") {
			if f := strings.Fields(line); len(f) > 1 && len(f[1]) == 32 {
				boots = append(boots, line) // IDX BOOT-ID FIRST-ENTRY LAST-ENTRY
			}
		}
		if len(boots) != 3 {
			t.Errorf("journalctl --list-boots shows %d boots, want 3:\n%s", len(boots), strings.Join(boots, "\n"))
		}
		if !strings.Contains(strings.Join(boots, "\n"), strings.ReplaceAll(strings.TrimSpace(bootID), "-", "")) {
			t.Errorf("the first boot %s is not among the journal's:\n%s", bootID, strings.Join(boots, "\n"))
		}
		if out := in.exec(name, "journalctl", "-b", "-1", "--no-pager", "-q", "-n", "3"); strings.TrimSpace(out) == "" {
			t.Errorf("journalctl -b -1 finds nothing")
		}
	})
}

// runNotified runs "nixcell run NAME" as a service manager would run it
// under a unit of Type=notify: with $NOTIFY_SOCKET set to a socket whose
// messages arrive on msgs. stop sends it SIGTERM and returns its exit
// status.
func runNotified(t *testing.T, in *instance, name string) (msgs <-chan string, stop func() int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	cmd := in.cmd("run", name)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() int {
		if stopped {
			return 0
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		conn.Close()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 0
	}
	t.Cleanup(func() { stop() })
	return ch, stop
}

// nextMessage waits for the next sd_notify message.
func nextMessage(t *testing.T, msgs <-chan string, timeout time.Duration) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(timeout):
		t.Fatalf("no sd_notify message within %v", timeout)
		return ""
	}
}

// TestRunPassesReadiness runs a container whose init never reports
// readiness under a notifying service manager: run reports READY=1 once
// the init runs, and STOPPING=1 when told to stop.
func TestRunPassesReadiness(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("notify")
	in.create(name, webConfig)
	msgs, stop := runNotified(t, in, name)
	if msg := nextMessage(t, msgs, 20*time.Second); msg != "READY=1" {
		t.Fatalf("first message: %q", msg)
	}
	if st := in.info(name).State; st != "running" {
		t.Errorf("state after READY=1: %s", st)
	}
	if code := stop(); code != 0 {
		t.Errorf("run exited %d after SIGTERM", code)
	}
	if msg := nextMessage(t, msgs, 5*time.Second); msg != "STOPPING=1" {
		t.Errorf("message after SIGTERM: %q", msg)
	}
}

// TestStartWaitTimeout runs plain roots whose init is named systemd (so
// start --wait expects READY=1) but never sends it: start --wait fails at
// the timeout and leaves the container running; an init that exits first
// fails it at once and leaves it stopped.
func TestStartWaitTimeout(t *testing.T) {
	in := newInstance(t)
	dir := busyboxRoot(t)
	// Two fake systemds: the fixture's init, which never reports
	// readiness, and one that exits at once.
	init, err := os.ReadFile(filepath.Join(dir, "sbin", "init"))
	if err != nil {
		t.Fatal(err)
	}
	quitter := []byte("#!/bin/sh\nexit 3\n")
	for path, script := range map[string][]byte{"lib/systemd/systemd": init, "usr/lib/systemd/systemd": quitter} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), script, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	silent := testutil.Name("silent")
	in.must("create", silent, "--rootfs", dir, "--init", "/lib/systemd/systemd")
	start := time.Now()
	r := in.run("start", "--wait", "--timeout", "1s", silent)
	want := "nixcell: start " + silent + ": not ready: its init did not report READY=1 within 1s; it keeps running (stop it with nixcell stop " + silent + ")\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("start --wait: %s\nwant stderr %q", r, want)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("start --wait --timeout 1s took %v", took)
	}
	if st := in.info(silent).State; st != "running" {
		t.Errorf("state after the readiness timeout: %s", st)
	}
	if got := in.exec(silent, "cat", "/proc/1/cmdline"); got != "/bin/sh\x00/lib/systemd/systemd\x00" {
		t.Errorf("a systemd init's command line is %q (its console is a terminal: no systemd.getty_auto=0)", got)
	}
	in.must("stop", silent)

	quits := testutil.Name("quits")
	in.must("create", quits, "--rootfs", dir, "--init", "/usr/lib/systemd/systemd")
	r = in.run("start", "--wait", "--timeout", "30s", quits)
	if r.code != 1 || !strings.Contains(r.stderr, "not ready: its init exited before it was ready (its output is in ") {
		t.Errorf("start --wait of an init that exits: %s", r)
	}
	if st := in.info(quits).State; st != "stopped" {
		t.Errorf("state after the init exited: %s", st)
	}
}
