package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/testutil"
)

// consoleRoot makes a plain root whose init is script (after a shebang).
func consoleRoot(t *testing.T, script string) string {
	t.Helper()
	dir := busyboxRoot(t)
	if err := os.WriteFile(filepath.Join(dir, "sbin", "init"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsole gives the init a terminal as its console: what it writes
// there reaches the console log while it runs detached, and its
// arguments come from initArgs.
func TestConsole(t *testing.T) {
	in := newInstance(t)
	dir := consoleRoot(t, `trap 'exit 0' 37
[ -t 0 ] && [ -t 1 ] && echo "the console is a terminal"
echo "args: $*"
echo "written to /dev/console" > /dev/console
while :; do sleep 1 & wait; done
`)
	name := testutil.Name("console")
	in.must("create", name, "--rootfs", dir, "-c", `{ initArgs = [ "systemd.unit=rescue.target" "two words" ]; }`)
	in.must("start", name)
	log := in.store.ConsoleLog(name)
	want := "the console is a terminal\nargs: systemd.unit=rescue.target two words\nwritten to /dev/console\n"
	waitFor(t, 10*time.Second, "the console log to show the init's output", func() bool {
		data, _ := os.ReadFile(log)
		return string(data) == want
	})
	if r := in.run("exec", name, "--", "test", "-c", "/dev/console"); r.code != 0 {
		t.Errorf("/dev/console is not a character device: %s", r)
	}
	if got := owner(t, log); got != "0:0" {
		t.Errorf("the console log belongs to %s, want the host's root", got)
	}

	// New arguments apply at the next start.
	r := in.run("update", name, "-c", `{ initArgs = [ "three" ]; }`)
	if r.code != 0 || !strings.Contains(r.stderr, "the initArgs settings of "+name+" changed; they apply when it restarts") {
		t.Errorf("update of initArgs: %s", r)
	}
	in.must("restart", name)
	waitFor(t, 10*time.Second, "the new arguments", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "args: three\n")
	})
	in.must("stop", name)
}

// TestConsoleLogCap keeps a noisy init's console log under its cap: the
// latest output, in console.log and console.log.1.
func TestConsoleLogCap(t *testing.T) {
	in := newInstance(t)
	dir := consoleRoot(t, `trap 'exit 0' 37
n=0
while :; do n=$((n+1)); echo "line $n 0123456789012345678901234567890123456789012345678901234567890123456789"; done
`)
	name := testutil.Name("noisy")
	const limit = 256 << 10
	in.must("create", name, "--rootfs", dir, "-c", `{ consoleLogSize = "256K"; }`)
	in.must("start", name)
	log := in.store.ConsoleLog(name)
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	// Rotated twice: console.log.1 holds output after the first rotation.
	var first string
	waitFor(t, 20*time.Second, "console.log.1", func() bool {
		data, err := os.ReadFile(log + ".1")
		first = string(data)
		return err == nil
	})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if total := size(log) + size(log+".1"); total > limit {
			t.Fatalf("the console log keeps %d bytes, over its cap of %d", total, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	again, _ := os.ReadFile(log + ".1")
	if string(again) == first {
		t.Errorf("console.log.1 did not change in 3 s of output: the log does not keep the latest")
	}
	t.Logf("agent: %d KiB RSS", agentRSS(t, in))
	in.must("stop", name)
	lines := strings.Split(strings.TrimSpace(string(again)), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "line ") || strings.Contains(string(again), "\r") {
		t.Errorf("the console log's lines: ...%q", lines[len(lines)-1])
	}
}

// agentRSS is the resident memory of the instance's console agent, in KiB.
func agentRSS(t *testing.T, in *instance) int {
	t.Helper()
	return processRSS(t, "console agent", "console-agent "+in.store.Run+"/console.sock")
}

// nameServerRSS is the resident memory of the instance's name server, in
// KiB.
func nameServerRSS(t *testing.T, in *instance) int {
	t.Helper()
	return processRSS(t, "name server", "name-server "+in.store.NameServerTablePath())
}

// processRSS is the resident memory of the one process whose command line
// has pattern, in KiB.
func processRSS(t *testing.T, what, pattern string) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", pattern).Output()
	pids := strings.Fields(string(out))
	if err != nil || len(pids) != 1 {
		t.Fatalf("the instance's %ss: %q (%v)", what, out, err)
	}
	status, err := os.ReadFile("/proc/" + pids[0] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kib
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestConsoleAgent runs one console agent for all the containers of an
// instance, however many: its memory with 1 and 20 containers is logged
// (and must stay under 4 MiB), and so is the name server's, the other host
// process running containers need (both together must stay under 5 MiB,
// issue 14); both exit once none runs.
func TestConsoleAgent(t *testing.T) {
	in := newInstance(t)
	dir := consoleRoot(t, "trap 'exit 0' 37\necho up\nwhile :; do sleep 1 & wait; done\n")
	var names []string
	for i := 0; i < 20; i++ {
		name := testutil.Name(fmt.Sprintf("agent%d", i))
		in.must("create", name, "--rootfs", dir)
		in.must("start", name)
		names = append(names, name)
		if i == 0 || i == 19 {
			rss, names := agentRSS(t, in), nameServerRSS(t, in)
			t.Logf("with %d containers: console agent %d KiB RSS, name server %d KiB, together %d KiB", i+1, rss, names, rss+names)
			if rss > 4<<10 {
				t.Errorf("the console agent takes %d KiB with %d containers", rss, i+1)
			}
			if rss+names > 5<<10 {
				t.Errorf("the host processes take %d KiB with %d containers", rss+names, i+1)
			}
		}
	}
	for _, n := range names {
		data, _ := os.ReadFile(in.store.ConsoleLog(n))
		if string(data) != "up\n" {
			t.Errorf("console log of %s: %q", n, data)
		}
		in.must("stop", n)
	}
	waitFor(t, 15*time.Second, "the console agent to exit", func() bool {
		return exec.Command("pgrep", "-f", "console-agent "+in.store.Run+"/console.sock").Run() != nil
	})
	waitFor(t, 15*time.Second, "the name server to exit", func() bool {
		return exec.Command("pgrep", "-f", "name-server "+in.store.NameServerTablePath()).Run() != nil
	})
}

// pidfdExitInfo tells whether the kernel reports a process's exit status
// through its pidfd (PIDFD_INFO_EXIT, Linux 6.15), so that the status of
// a detached container's init is known.
func pidfdExitInfo(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 6 || major == 6 && minor >= 15
}

type lastExit struct {
	Code        int  `json:"code"`
	Signal      int  `json:"signal"`
	OOMKilled   bool `json:"oomKilled"`
	StatusKnown bool `json:"statusKnown"`
}

func (in *instance) lastExit(name string) *lastExit {
	in.t.Helper()
	var st struct {
		LastExit *lastExit `json:"lastExit"`
	}
	if err := json.Unmarshal([]byte(in.run("state", "--json", name).stdout), &st); err != nil {
		in.t.Fatal(err)
	}
	return st.LastExit
}

// TestOOMKilled reports an init that the kernel's OOM killer ended: in
// state --json (detached) and in run's exit, as a stop or an exit of its
// own is reported as what it is.
func TestOOMKilled(t *testing.T) {
	in := newInstance(t)
	dir := consoleRoot(t, `trap 'exit 0' 37
if [ -e /hog ]; then
  echo 1000 > /proc/self/oom_score_adj
  x=0123456789; while :; do x="$x$x"; done
fi
[ -e /exit ] && exit 7
while :; do sleep 1 & wait; done
`)
	name := testutil.Name("oom")
	in.must("create", name, "--rootfs", dir, "--memory", "48M")
	if e := in.lastExit(name); e != nil {
		t.Errorf("lastExit of a container that never ran: %+v", e)
	}

	in.must("start", name)
	in.must("stop", name)
	if e := in.lastExit(name); e == nil || e.OOMKilled || e.StatusKnown && e.Code != 0 {
		t.Errorf("lastExit after a stop: %+v", e)
	}

	hog := filepath.Join(dir, "hog")
	if err := os.WriteFile(hog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	in.must("start", name)
	waitFor(t, 30*time.Second, "the init to be OOM-killed", func() bool { return in.run("state", name).code == 3 })
	if pidfdExitInfo(t) {
		var e *lastExit
		waitFor(t, 10*time.Second, "its exit status", func() bool {
			e = in.lastExit(name)
			return e != nil && e.StatusKnown
		})
		if !e.OOMKilled || e.Code != 137 || e.Signal != 9 {
			t.Errorf("lastExit of an OOM-killed init: %+v", e)
		}
	} else if e := in.lastExit(name); e == nil || !e.OOMKilled || e.StatusKnown {
		t.Errorf("lastExit of an OOM-killed init, on a kernel that does not tell its status: %+v", e)
	}

	r := in.run("run", name)
	if r.code != 137 || !strings.Contains(r.stderr, "nixcell: run "+name+": its init was killed by the OOM killer") {
		t.Errorf("run of an init the OOM killer ends: %s", r)
	}
	if e := in.lastExit(name); e == nil || !e.OOMKilled || e.Code != 137 {
		t.Errorf("lastExit after run: %+v", e)
	}

	if err := os.Remove(hog); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "exit"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := in.run("run", name); r.code != 7 || strings.Contains(r.stderr, "OOM") {
		t.Errorf("run of an init that exits 7: %s", r)
	}
	if e := in.lastExit(name); e == nil || e.OOMKilled || e.Code != 7 || !e.StatusKnown {
		t.Errorf("lastExit after an exit of its own: %+v", e)
	}
}

// TestRunConsole runs a container in the foreground on a terminal: the
// terminal is its console, keys go to the init, and ^] pressed three times
// stops it cleanly.
func TestRunConsole(t *testing.T) {
	in := newInstance(t)
	dir := consoleRoot(t, `trap 'echo stopping; exit 0' 37
echo "type something"
read line
echo "got: $line"
while :; do sleep 1 & wait; done
`)
	name := testutil.Name("fgconsole")
	in.must("create", name, "--rootfs", dir)
	term := startTerminal(t, in, "run", name)
	term.expect("press ^] three times")
	term.expect("type something")
	term.send("hello\r")
	term.expect("got: hello")
	term.send("\x1d\x1d\x1d")
	term.expect("stopping")
	if code := term.exit(); code != 0 {
		t.Errorf("run exited %d after ^]^]^]; screen:\n%s", code, term.out.String())
	}
	if st := in.info(name).State; st != "stopped" {
		t.Errorf("state after run: %s", st)
	}
}
