package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// Tests of checkpoint and restore-checkpoint (issue 15) through CRIU.

// startCounter starts, in the running container, a process that counts in
// its memory and writes the count to /run/count every tenth of a second.
func (in *instance) startCounter(name string) {
	in.t.Helper()
	in.exec(name, "sh", "-c", `setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /run/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`)
}

// count reads the counter's last count: 0 before its first (the exec
// that starts the counter returns before the counter has written).
func (in *instance) count(name string) int {
	in.t.Helper()
	r := in.run("exec", name, "--", "cat", "/run/count")
	if r.code != 0 && strings.Contains(r.stderr, "No such file") {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if r.code != 0 || err != nil {
		in.t.Fatalf("the counter's count: %s", r)
	}
	return n
}

// TestCheckpoint: where criu check fails (Debian 12's CRIU 3.17 on Linux
// 6.13 and later), checkpoint fails with CRIU's reason, the container keeps
// running and nothing of the attempt is left; where it passes, a process
// that counts in memory counts on after a checkpoint and restore (as the
// guest tier tests on Linux 6.1).
func TestCheckpoint(t *testing.T) {
	testutil.RequiresRoot(t)
	if _, err := exec.LookPath("criu"); err != nil {
		testutil.Skip(t, "criu is not installed (scripts/setup-host.sh installs it)")
	}
	if exec.Command("criu", "check").Run() == nil {
		checkpointRestore(t)
		return
	}
	in := newInstance(t)
	name := testutil.Name("ckpt")
	in.create(name, labelled("one"))
	in.must("start", name)
	in.startCounter(name)
	waitFor(t, 10*time.Second, "the counter to count", func() bool { return in.count(name) > 0 })
	before := in.info(name)

	r := in.run("checkpoint", name)
	if r.code == 0 || !strings.Contains(r.stderr, "criu cannot run on this kernel") || !strings.Contains(r.stderr, "vDSO") ||
		!strings.Contains(r.stderr, "CRIU 4.1 or later is needed for Linux 6.13+") || !strings.Contains(r.stderr, name) {
		t.Fatalf("checkpoint on this kernel: %s", r)
	}
	t.Logf("checkpoint: %s", r)
	after := in.info(name)
	if after.State != "running" || after.Pid != before.Pid {
		t.Errorf("after the failed checkpoint: %+v, want it running as before (%+v)", after, before)
	}
	c := in.count(name)
	waitFor(t, 10*time.Second, "the counter to go on", func() bool { return in.count(name) > c })
	left, _ := filepath.Glob(filepath.Join(in.store.Dir(name), "checkpoint*"))
	if len(left) > 0 {
		t.Errorf("the failed checkpoint left %v", left)
	}
	if r := in.run("restore-checkpoint", name); r.code == 0 {
		t.Errorf("restore-checkpoint without a checkpoint: %s", r)
	}
	in.must("stop", name)
	if r := in.run("restore-checkpoint", name); r.code == 0 || !strings.Contains(r.stderr, "has none") {
		t.Errorf("restore-checkpoint without a checkpoint: %s", r)
	}
	if _, err := os.Stat(in.store.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

// checkpointRestore checkpoints and restores a container whose process
// counts in memory.
func checkpointRestore(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("ckpt")
	in.create(name, labelled("one"))
	in.must("start", name)
	in.startCounter(name)
	waitFor(t, 10*time.Second, "the counter to count", func() bool { return in.count(name) > 0 })
	before := in.count(name)
	in.must("checkpoint", name)
	if got := in.info(name).State; got != "stopped" {
		t.Fatalf("after the checkpoint: %s, want stopped", got)
	}
	in.must("restore-checkpoint", name)
	c1 := in.count(name)
	waitFor(t, 10*time.Second, "the counter to go on", func() bool { return in.count(name) > c1 })
	if c1 < before {
		t.Errorf("the count after the restore: %d, before the checkpoint %d", c1, before)
	}
	in.must("stop", name)
}
