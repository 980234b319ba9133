package runtime

// The runtime's root-only tier: real containers made with this package
// alone, below the command line and cell, as runc's libcontainer
// integration tests do. The test binary is also the containers' init
// re-exec (TestMain).

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/console"
	"github.com/nixcell/nixcell/internal/testutil"
)

func TestMain(m *testing.M) {
	if IsInit() {
		Init() // never returns
	}
	if helper := os.Getenv(startHelperEnv); helper != "" {
		os.Exit(startHelper(helper))
	}
	os.Exit(m.Run())
}

// testContainer makes a container of a busybox root file system below a
// directory only root can enter, with an ID range of its own (random, far
// above the ranges nixcell allocates), and removes everything when the
// test ends.
func testContainer(t *testing.T) *Container {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "busybox")
	base := t.TempDir()
	// The root below a directory only root can enter; the run directory
	// reachable by the container's IDs, as /run/nixcell is.
	if err := os.Chmod(base, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(base), 0o711); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "root")
	for _, d := range []string{"bin", "sbin", "etc", "root", "proc", "sys", "dev", "run", "tmp", "var/log"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := exec.LookPath("busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep", "echo", "cat", "id", "true"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	init := "#!/bin/sh\ntrap 'echo stop >> /var/log/init; exit 0' 37\necho start >> /var/log/init\necho on the console\nwhile :; do sleep 1 & wait; done\n"
	if err := os.WriteFile(filepath.Join(root, "sbin", "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	start := uint32(3<<30) + binary.LittleEndian.Uint32(b[:])%(1<<14)*(1<<16)
	run := t.TempDir()
	if err := os.Chmod(run, 0o711); err != nil {
		t.Fatal(err)
	}
	c := containerAt(base, run, testutil.Name("rt"), start)
	t.Cleanup(func() {
		if err := Cleanup(c.Place()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if entries, _ := os.ReadDir(c.StateRoot); len(entries) > 0 {
			t.Errorf("runtime state left: %v", entries)
		}
		if _, err := os.Stat(c.HostDir); err == nil {
			t.Errorf("host directory %s left", c.HostDir)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", c.CgroupPath)); err == nil {
			t.Errorf("cgroup %s left", c.CgroupPath)
		}
		RemoveEmptyCgroup(filepath.Dir(c.CgroupPath))
		if left := cgroupDirs(filepath.Dir(c.CgroupPath)); len(left) > 0 {
			t.Errorf("cgroups %v left", left)
		}
	})
	return c
}

// containerAt is the test container of name whose root is below base,
// its run directory run and its ID range at start.
func containerAt(base, run, name string, start uint32) *Container {
	return &Container{
		Name: name, StateRoot: filepath.Join(run, "containers"), HostDir: filepath.Join(run, "host", name),
		RootFS: filepath.Join(base, "root"), PlainRoot: true, Init: "/sbin/init", ConsoleLog: filepath.Join(base, "console.log"),
		CgroupPath: "/nixcell-rttest-" + name + "/" + name, IDs: IDRange{Start: start, Size: 1 << 16},
		DeviceDir: filepath.Join(base, "devices"), HostNetwork: false,
		ConsoleAgent: console.Agent{Socket: filepath.Join(run, "console.sock"), Lock: filepath.Join(run, "console.lock")},
	}
}

func TestStartExecStop(t *testing.T) {
	c := testContainer(t)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(c.StateRoot, c.Name)
	if err != nil || !st.Running || !Alive(st.Pid, st.StartedAt) {
		t.Fatalf("after Start: %+v, %v", st, err)
	}
	var out bytes.Buffer
	code, err := Exec{Args: []string{"id"}, Stdio: Stdio{Stdout: &out}}.Run(c.StateRoot, c.Name)
	if err != nil || code != 0 || !strings.HasPrefix(out.String(), "uid=0(") && !strings.HasPrefix(out.String(), "uid=0 ") {
		t.Errorf("exec id: %d, %v, %q", code, err, out.String())
	}
	uidMap, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/uid_map")
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[1] != strconv.Itoa(int(c.IDs.Start)) || f[2] != "65536" {
		t.Errorf("uid_map %q, want 0 %d 65536", uidMap, c.IDs.Start)
	}
	code, _ = Exec{Args: []string{"sh", "-c", "exit 7"}}.Run(c.StateRoot, c.Name)
	if code != 7 {
		t.Errorf("exit status %d, want 7", code)
	}
	// The stop signal, once the init handles it: a clean stop.
	waitUntil(t, func() bool { return readSignalMasks(st.Pid).handles(StopSignal) })
	res, err := Stop(c.StateRoot, c.Name, 10*time.Second)
	if err != nil || !res.Clean || !res.Signalled {
		t.Errorf("Stop: %+v, %v", res, err)
	}
	if log, _ := os.ReadFile(filepath.Join(c.RootFS, "var/log/init")); string(log) != "start\nstop\n" {
		t.Errorf("the init's log: %q", log)
	}
	waitUntil(t, func() bool {
		log, _ := os.ReadFile(c.ConsoleLog)
		return string(log) == "on the console\n"
	})
	if st, _ := Inspect(c.StateRoot, c.Name); st.Running {
		t.Errorf("running after Stop: %+v", st)
	}
	if _, err := (Exec{Args: []string{"true"}}).Run(c.StateRoot, c.Name); err == nil {
		t.Error("exec into a stopped container worked")
	}
}

func TestKill(t *testing.T) {
	c := testContainer(t)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	st, _ := Inspect(c.StateRoot, c.Name)
	if err := Kill(c.Place()); err != nil {
		t.Fatal(err)
	}
	if Alive(st.Pid, st.StartedAt) {
		t.Error("the init survived Kill")
	}
}

// TestStartFailsCleanly: a start whose init cannot run leaves nothing.
func TestStartFailsCleanly(t *testing.T) {
	c := testContainer(t)
	c.Init = "/sbin/missing"
	if err := c.Start(); err == nil {
		t.Fatal("a start with a missing init worked")
	}
	if entries, _ := os.ReadDir(c.StateRoot); len(entries) > 0 {
		t.Errorf("runtime state left after a failed start: %v", entries)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
