package cell

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/state"
)

// TestPrune: every network change keeps the records whose process exists;
// doctor's resync also drops those whose PID now names another process
// (here this test's own PID with a start time that is not its own).
func TestPrune(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	// An exited process that nobody reaped yet counts as gone.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	waitExited(t, zombie.Process.Pid)
	me := state.Process{Pid: os.Getpid(), StartedAt: time.Unix(1, 0)}
	table := func() state.Runs {
		return state.Runs{
			"gone":     {Phase: state.Running, Init: state.Process{Pid: gone.Process.Pid, StartedAt: time.Unix(1, 0)}},
			"recycled": {Phase: state.Running, Init: me},
			"zombie":   {Phase: state.Running, Init: state.Process{Pid: zombie.Process.Pid, StartedAt: time.Unix(1, 0)}},
		}
	}
	m := &Manager{Store: state.Store{Root: t.TempDir()}}
	runs := table()
	m.prune(runs, exists)
	if _, ok := runs["gone"]; ok {
		t.Error("prune kept the record of a process that does not exist")
	}
	if _, ok := runs["zombie"]; ok {
		t.Error("prune kept the record of a process that exited and was not reaped")
	}
	if _, ok := runs["recycled"]; !ok {
		t.Error("prune dropped the record of a process that exists")
	}
	runs = table()
	m.prune(runs, exactlyAlive)
	if len(runs) != 0 {
		t.Errorf("an exact prune kept %v", runs)
	}
}

// waitExited waits until pid, a child not reaped, has exited (its
// /proc/PID/stat says Z).
func waitExited(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && strings.Contains(string(data), ") Z ") {
			return
		}
	}
	t.Fatalf("process %d did not exit", pid)
}
