package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

const webConfig = `{ name, ... }: {
  services.httpd.enable = true;
  services.httpd.text = "hello from ${name}\n";
  services.echo.enable = true;
  system.fixture.label = "gen-one";
}`

// TestCreateForms creates a container from each kind of source and checks
// that generation 1 is in the Nix profile where nix-env sees it.
func TestCreateForms(t *testing.T) {
	in := newInstance(t)
	cases := []struct {
		form string
		args func(name string) []string
	}{
		{"module file", func(name string) []string {
			return append([]string{"create", name, nixFile(t, "m.nix", webConfig)}, nixArgs...)
		}},
		{"attribute set", func(name string) []string {
			return append([]string{"create", name, nixFile(t, "s.nix", `{
  autostart = true;
  configuration = { name, ... }: { services.httpd.enable = true; system.fixture.label = "from-set-${name}"; };
}`)}, nixArgs...)
		}},
		{"inline", func(name string) []string {
			return append([]string{"create", name, "-c", `{ system.fixture.label = "inline"; }`}, nixArgs...)
		}},
		{"prebuilt system", func(name string) []string {
			return []string{"create", name, "--system", prebuilt(t, webConfig)}
		}},
	}
	for i, c := range cases {
		t.Run(strings.ReplaceAll(c.form, " ", "-"), func(t *testing.T) {
			name := testutil.Name(fmt.Sprintf("form%d", i))
			r := in.run(c.args(name)...)
			if r.code != 0 {
				t.Fatalf("create: %s", r)
			}
			i := in.info(name)
			if i.State != "stopped" || i.Generation != 1 || !strings.HasPrefix(i.System, "/nix/store/") {
				t.Errorf("after create: %+v", i)
			}
			out, err := exec.Command("nix-env", "-p", filepath.Join(nix.ProfilesDir, name, "system"), "--list-generations").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "   1   ") {
				t.Errorf("nix-env --list-generations: %v\n%s", err, out)
			}
			if target, _ := filepath.EvalSymlinks(filepath.Join(nix.ProfilesDir, name, "system")); target != i.System {
				t.Errorf("profile points to %q, state says %q", target, i.System)
			}
		})
	}
}

// TestLifecycle walks one container through start, exec, stop, restart and
// terminate, checking what a user would check.
func TestLifecycle(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("web")
	in.create(name, webConfig)
	in.must("start", name)
	i := in.info(name)
	if i.State != "running" || i.Pid == 0 || i.IDs == nil || i.IDs.Size != 65536 {
		t.Fatalf("after start: %+v", i)
	}
	if r := in.run("start", name); r.code == 0 || !strings.Contains(r.stderr, "nixcell: start "+name+": it is already running") {
		t.Errorf("second start: %s", r)
	}

	t.Run("hostname", func(t *testing.T) {
		if got := strings.TrimSpace(in.exec(name, "hostname")); got != name {
			t.Errorf("hostname inside = %q, want %q", got, name)
		}
	})
	t.Run("pid1-is-init", func(t *testing.T) {
		cmdline := in.exec(name, "cat", "/proc/1/cmdline")
		if !strings.Contains(cmdline, "/nix/var/nix/profiles/system/init") {
			t.Errorf("PID 1 runs %q, want the profile's init", cmdline)
		}
		if got := strings.TrimSpace(in.exec(name, "cat", "/run/nixcell-fixture/init-path")); got != "/nix/var/nix/profiles/system/init" {
			t.Errorf("init started as %q", got)
		}
		if got := strings.TrimSpace(in.exec(name, "readlink", "/nix/var/nix/profiles/system")); got != "system-1-link" {
			t.Errorf("/nix/var/nix/profiles/system inside points to %q, want the container's profile", got)
		}
	})
	t.Run("uid-map", func(t *testing.T) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", i.Pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		want := []string{"0", strconv.Itoa(int(i.IDs.Start)), "65536"}
		if strings.Join(f, " ") != strings.Join(want, " ") {
			t.Errorf("uid_map of init = %q, want %q", f, want)
		}
		if got := strings.TrimSpace(in.exec(name, "id", "-u")); got != "0" {
			t.Errorf("uid inside = %q, want 0", got)
		}
	})
	t.Run("store-read-only-and-root-owned", func(t *testing.T) {
		r := in.run("exec", name, "--", "touch", "/nix/store/nixcell-write-test")
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("writing to /nix/store inside: %s", r)
		}
		owner := strings.Fields(in.exec(name, "ls", "-ldn", i.System))
		if len(owner) < 4 || owner[2] != "0" || owner[3] != "0" {
			t.Errorf("system path inside owned by %v, want 0 0 (idmapped)", owner)
		}
	})
	t.Run("services", func(t *testing.T) {
		in.waitHTTP(name, "hello from "+name+"\n")
		if got := in.must("exec", name, "--", "sh", "-c", "echo ping | nc 127.0.0.1 7"); got != "ping\n" {
			t.Errorf("echo service answered %q", got)
		}
	})
	t.Run("exec-streams-and-status", func(t *testing.T) {
		r := in.runIn("from stdin\n", "exec", name, "--", "sh", "-c", "cat; echo to-stderr >&2; exit 42")
		if r.code != 42 || r.stdout != "from stdin\n" || r.stderr != "to-stderr\n" {
			t.Errorf("exec: %s", r)
		}
		if r := in.run("exec", name, "--", "sh", "-c", "kill -9 $$"); r.code != 128+9 {
			t.Errorf("exec of a process killed by SIGKILL: %s, want exit 137", r)
		}
		r = in.run("exec", name, "--", "no-such-command")
		if r.code != 125 || !strings.Contains(r.stderr, "no-such-command") {
			t.Errorf("exec of a missing command: %s", r)
		}
	})

	// A file written inside persists across stop and start.
	in.exec(name, "sh", "-c", "echo kept > /root/persist")
	start := time.Now()
	r := in.run("stop", "--timeout", "60s", name)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %s", r)
	}
	t.Logf("stop took %v", time.Since(start))
	if log := in.readRoot(name, "var/log/nixcell-fixture.log"); !strings.Contains(log, "stop signal=RTMIN+3") {
		t.Errorf("init did not get SIGRTMIN+3; its log:\n%s", log)
	}
	if !strings.Contains(in.readRoot(name, "../console.log"), "") {
		t.Error("no console log")
	}
	if r := in.run("state", name); r.code != 3 || r.stdout != "stopped\n" {
		t.Errorf("state after stop: %s", r)
	}
	if r := in.run("stop", name); r.code != 1 || !strings.Contains(r.stderr, "nixcell: stop "+name+": it is not running") {
		t.Errorf("stop of a stopped container: %s", r)
	}
	if r := in.run("exec", name, "--", "true"); r.code != 125 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("exec in a stopped container: %s", r)
	}
	in.must("start", name)
	if got := in.exec(name, "cat", "/root/persist"); got != "kept\n" {
		t.Errorf("file after restart = %q", got)
	}
	oldPid := in.info(name).Pid
	in.must("restart", name)
	if p := in.info(name).Pid; p == oldPid || p == 0 {
		t.Errorf("restart kept pid %d", p)
	}

	// terminate kills at once: the init gets no chance to log a stop.
	before := strings.Count(in.readRoot(name, "var/log/nixcell-fixture.log"), "stop signal")
	in.must("terminate", name)
	if st := in.info(name).State; st != "stopped" {
		t.Errorf("state after terminate: %s", st)
	}
	if after := strings.Count(in.readRoot(name, "var/log/nixcell-fixture.log"), "stop signal"); after != before {
		t.Errorf("terminate let the init handle a stop signal")
	}
}

// TestStopSignalBeforeHandler stops a container whose init installs its
// handler only after 2 s: the signal must not be lost.
func TestStopSignalBeforeHandler(t *testing.T) {
	in := newInstance(t)
	slow := testutil.Name("slow")
	in.create(slow, `{ system.fixture.handlerDelay = 2; }`)
	in.must("start", slow)
	if r := in.run("stop", "--timeout", "30s", slow); r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %s", r)
	}
	if log := in.readRoot(slow, "var/log/nixcell-fixture.log"); !strings.Contains(log, "stop signal=RTMIN+3") {
		t.Errorf("the early stop signal was lost; init log:\n%s", log)
	}
}

// TestStopTimeoutKills stops an init that ignores the stop signal.
func TestStopTimeoutKills(t *testing.T) {
	in := newInstance(t)
	stubborn := testutil.Name("stubborn")
	in.create(stubborn, `{ system.fixture.ignoreStopSignals = true; }`)
	in.must("start", stubborn)
	r := in.run("stop", "--timeout", "1s", stubborn)
	if r.code != 0 || !strings.Contains(r.stderr, "killed after 1s: its init never handled the stop signal") {
		t.Fatalf("stop: %s", r)
	}
	if st := in.info(stubborn).State; st != "stopped" {
		t.Errorf("state after stop: %s", st)
	}
}

// TestDiedOnItsOwn checks that state tells an init that exited by itself
// from a running one, and that the container starts again.
func TestDiedOnItsOwn(t *testing.T) {
	in := newInstance(t)
	brief := testutil.Name("brief")
	in.create(brief, `{ system.fixture.exitAfter = 1; }`)
	in.must("start", brief)
	waitFor(t, 20*time.Second, "the init to exit on its own", func() bool {
		return in.run("state", brief).code == 3
	})
	in.must("start", brief)
	if st := in.info(brief).State; st != "running" {
		t.Errorf("state after second start: %s", st)
	}
}

// TestRunForeground runs containers in the foreground: the init's exit
// status comes back, and SIGTERM shuts it down cleanly.
func TestRunForeground(t *testing.T) {
	in := newInstance(t)
	fg, fg2 := testutil.Name("fg"), testutil.Name("fg2")
	in.create(fg, `{ system.fixture.exitAfter = 1; system.fixture.exitCode = 7; }`)
	if r := in.run("run", fg); r.code != 7 {
		t.Errorf("run: %s", r)
	}
	if st := in.info(fg).State; st != "stopped" {
		t.Errorf("state after run: %s", st)
	}

	in.create(fg2, webConfig)
	cmd := in.cmd("run", fg2)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.waitHTTP(fg2, "hello from "+fg2+"\n")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err != nil {
		t.Errorf("run after SIGTERM: %v", err)
	}
	if log := in.readRoot(fg2, "var/log/nixcell-fixture.log"); !strings.Contains(log, "stop signal=RTMIN+3") {
		t.Errorf("SIGTERM to run did not stop the init cleanly; log:\n%s", log)
	}
}

// TestDestroyLeavesNoTrace destroys a running container and looks for
// anything of it on the host.
func TestDestroyLeavesNoTrace(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("gone")
	in.create(name, webConfig)
	in.must("start", name)
	ids := in.info(name).IDs
	in.must("destroy", name)
	for _, p := range []string{in.store.Dir(name), filepath.Join(nix.ProfilesDir, name), filepath.Join(nix.GCRootsDir, name),
		filepath.Join(in.dir, "locks", name+".lock"), filepath.Join(in.store.RuntimeRoot(), name)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
	if r, held, err := in.ranges().Lookup(name); held || err != nil || ids == nil {
		t.Errorf("ID range still held: %v, %v, %v", r, held, err)
	}
	if leaks := in.leaks(); len(leaks) > 0 {
		t.Errorf("leaks: %v", leaks)
	}
	if r := in.run("exists", name); r.code != 1 || r.stdout != "no\n" {
		t.Errorf("exists after destroy: %s", r)
	}
	if r := in.run("destroy", name); r.code != 1 || !strings.Contains(r.stderr, "no such container") {
		t.Errorf("second destroy: %s", r)
	}
}

// TestManyAtOnce creates and starts 20 containers concurrently: each gets
// its own ID range and runs.
func TestManyAtOnce(t *testing.T) {
	in := newInstance(t)
	system := prebuilt(t, webConfig)
	const n = 20
	names := make([]string, n)
	for k := range names {
		names[k] = testutil.Name(fmt.Sprintf("many%d", k))
	}
	var wg sync.WaitGroup
	errs := make([]string, n)
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			name := names[k]
			if r := in.run("create", name, "--system", system); r.code != 0 {
				errs[k] = "create: " + r.String()
				return
			}
			if r := in.run("start", name); r.code != 0 {
				errs[k] = "start: " + r.String()
			}
		}(k)
	}
	wg.Wait()
	for k, e := range errs {
		if e != "" {
			t.Errorf("%s: %s", names[k], e)
		}
	}
	starts := map[uint32]string{}
	for k := 0; k < n; k++ {
		name := names[k]
		i := in.info(name)
		if i.State != "running" || i.IDs == nil {
			t.Errorf("%s: %+v", name, i)
			continue
		}
		if other, dup := starts[i.IDs.Start]; dup {
			t.Errorf("%s and %s share ID range %d", name, other, i.IDs.Start)
		}
		starts[i.IDs.Start] = name
	}
	for a := range starts {
		for b := range starts {
			if a < b && b-a < 65536 {
				t.Errorf("ranges at %d and %d overlap", a, b)
			}
		}
	}
}

// TestAutostart starts only the stopped containers that have autostart.
func TestAutostart(t *testing.T) {
	in := newInstance(t)
	on, off, running := testutil.Name("auto"), testutil.Name("manual"), testutil.Name("already")
	in.create(on, `{ autostart = true; configuration = { }; }`)
	in.create(off, `{ }`)
	in.create(running, `{ autostart = true; configuration = { }; }`)
	in.must("start", running)
	r := in.run("autostart")
	if r.code != 0 || strings.TrimSpace(r.stdout) != on {
		t.Errorf("autostart: %s; want only %s started", r, on)
	}
	for name, want := range map[string]string{on: "running", off: "stopped", running: "running"} {
		if got := in.info(name).State; got != want {
			t.Errorf("%s is %s, want %s", name, got, want)
		}
	}
	if r := in.run("list", "--json"); !strings.Contains(r.stdout, `"autostart": true`) {
		t.Errorf("list does not show autostart: %s", r.stdout)
	}
}

// TestStartTrace: start --trace (or NIXCELL_TRACE=1) prints each phase of
// the start with its duration, and the total.
func TestStartTrace(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("trace")
	in.create(name, `{ }`)
	r := in.run("start", "--trace", name)
	if r.code != 0 {
		t.Fatalf("start --trace: %s", r)
	}
	// The host's network and the container's interfaces are set up beside
	// the other phases: their lines say so, and one marks the wait for them.
	for _, phase := range []string{"record and lock", "host network (beside)", "root prepared", "host mounts", "namespaces, cgroup, mounts",
		"network interfaces (beside)", "network interfaces waited", "init running", "run recorded", "total"} {
		if !regexpLine(r.stderr, `trace: `+regexp.QuoteMeta(phase)+`\s+[0-9.]+ ms$`) {
			t.Errorf("no line for %q in:\n%s", phase, r.stderr)
		}
	}
	in.must("stop", name)
	c := in.cmd("start", name)
	c.Env = append(c.Env, "NIXCELL_TRACE=1")
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "trace: total") {
		t.Errorf("NIXCELL_TRACE=1 start: %v\n%s", err, out)
	}
}
