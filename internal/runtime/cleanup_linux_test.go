package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startHelperEnv makes the test binary a process that starts a test
// container and exits (TestMain), for tests that kill a start.
const startHelperEnv = "NIXCELL_RUNTIME_TEST_START"

type startHelperArgs struct {
	Base, Run, Name string
	Start           uint32
}

func startHelper(arg string) int {
	var a startHelperArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := containerAt(a.Base, a.Run, a.Name, a.Start).Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// leftovers lists what of c is on the host: its runtime state, host
// directory, cgroup directories and processes.
func leftovers(c *Container) []string {
	var left []string
	if _, err := os.Lstat(filepath.Join(c.StateRoot, c.Name)); err == nil {
		left = append(left, "runtime state")
	}
	if _, err := os.Lstat(c.HostDir); err == nil {
		left = append(left, "host directory")
	}
	for _, d := range cgroupDirs(c.CgroupPath) {
		left = append(left, "cgroup "+d)
	}
	// The parent is shared with other containers and left by Cleanup
	// (RemoveEmptyCgroup); testContainer's cleanup checks that it goes.
	return left
}

// checkClean fails the test if anything of c is left, then shows that c
// starts and stops again.
func checkClean(t *testing.T, when string, c *Container) {
	t.Helper()
	if left := leftovers(c); len(left) > 0 {
		t.Fatalf("%s: left %v", when, left)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("%s: starting again: %v", when, err)
	}
	if err := Kill(c.Place()); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}

// TestCleanupWithoutState: a start killed before libcontainer wrote its
// state leaves a state directory without state.json (only exec.fifo) and
// the container's cgroups, with processes in them; libcontainer's Load
// says such a container does not exist. Cleanup kills the processes and
// removes the cgroups in every hierarchy and the directory, and the
// container starts again (issue 13, item 1).
func TestCleanupWithoutState(t *testing.T) {
	c := testContainer(t)
	dir := filepath.Join(c.StateRoot, c.Name)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "exec.fifo"), 0o622); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "1000")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	for _, procs := range hierarchies {
		cg := filepath.Join(filepath.Dir(procs), c.CgroupPath)
		if err := os.MkdirAll(filepath.Join(cg, "inner"), 0o755); err != nil {
			t.Fatal(err)
		}
		if filepath.Base(filepath.Dir(procs)) == "cpuset" {
			continue // a process needs CPUs and memory nodes set there first
		}
		if err := os.WriteFile(filepath.Join(cg, "inner", "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0); err != nil {
			t.Fatalf("moving the process into %s: %v", cg, err)
		}
	}
	if err := Cleanup(c.Place()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process in the container's cgroup survived Cleanup")
	}
	checkClean(t, "after Cleanup", c)
}

// TestCleanupWaitingInit: a start killed after libcontainer wrote its
// state, before it let the init run, leaves libcontainer's init waiting on
// the exec fifo for ever. Such a container does not run (Inspect), and
// Cleanup kills that init.
func TestCleanupWaitingInit(t *testing.T) {
	c := testContainer(t)
	s, err := c.create(nil)
	if err != nil {
		t.Fatal(err)
	}
	s.notify.Close()
	pid, err := s.proc.Pid()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Inspect(c.StateRoot, c.Name); err != nil || st.Running {
		t.Errorf("an init waiting on its exec fifo: %+v, %v; want not running", st, err)
	}
	if err := Cleanup(c.Place()); err != nil {
		t.Fatal(err)
	}
	_, _ = s.proc.Wait()
	if err := unix.Kill(pid, 0); err == nil {
		t.Error("the waiting init survived Cleanup")
	}
	checkClean(t, "after Cleanup", c)
}

// TestKilledStart kills a start (a process of its own, SIGKILL) at
// delays spread over a whole start, and after each Cleanup leaves
// nothing and the container starts again.
func TestKilledStart(t *testing.T) {
	c := testContainer(t)
	arg, _ := json.Marshal(startHelperArgs{Base: filepath.Dir(c.RootFS), Run: filepath.Dir(c.StateRoot), Name: c.Name, Start: c.IDs.Start})
	helper := func() *exec.Cmd {
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), startHelperEnv+"="+string(arg))
		return cmd
	}
	// How long a whole start takes here.
	t0 := time.Now()
	if out, err := helper().CombinedOutput(); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	whole := time.Since(t0)
	if err := Kill(c.Place()); err != nil {
		t.Fatal(err)
	}
	const kills = 30
	for i := range kills {
		delay := whole * time.Duration(i) / kills
		cmd := helper()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err := Cleanup(c.Place()); err != nil {
			t.Fatalf("killed after %v: Cleanup: %v", delay, err)
		}
		if left := leftovers(c); len(left) > 0 {
			t.Fatalf("killed after %v: left %v", delay, left)
		}
	}
	checkClean(t, "after the killed starts", c)
}
