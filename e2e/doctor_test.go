package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

type doctorResult struct {
	Check, Status, Found, Fix string
	Fixable                   bool
}

func (in *instance) doctor() (map[string]doctorResult, int) {
	in.t.Helper()
	r := in.run("doctor", "--json")
	var results []doctorResult
	if err := json.Unmarshal([]byte(r.stdout), &results); err != nil {
		in.t.Fatalf("doctor --json: %v (%s)", err, r)
	}
	byName := map[string]doctorResult{}
	for _, res := range results {
		byName[res.Check] = res
	}
	return byName, r.code
}

// TestDoctor: doctor passes on this host; it reports, by check, a broken
// prerequisite and each kind of leftover a test makes (a deleted bridge, a
// stale lock, a leaked mount, a dead init's run record, runtime state and
// cgroup); --fix repairs them, and the container starts again.
func TestDoctor(t *testing.T) {
	in := newInstance(t)
	results, code := in.doctor()
	for name, r := range results {
		if r.Status == "fail" {
			t.Errorf("doctor fails %s on a host that runs containers: %+v", name, r)
		}
	}
	if code != 0 {
		t.Errorf("doctor exited %d", code)
	}
	name := testutil.Name("doc")
	in.create(name, `{ }`)
	in.must("start", name)
	pid := in.info(name).Pid

	// Break things.
	if out, err := exec.Command("ip", "link", "del", "nch-"+in.store.ID).CombinedOutput(); err != nil {
		t.Fatalf("deleting the bridge: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(in.dir, "locks", "ghost.lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(in.store.Run, "host", "ghost")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	// What writes of the container's record and of the run table leave
	// when killed between their create and rename (atomicfile's names;
	// TestLeftoversOfKilledWriters makes them by killing writers).
	partial := []string{filepath.Join(in.store.Dir(name), ".container.json.tmp-4242"), filepath.Join(in.store.Run, ".runs.json.tmp-4242")}
	for _, f := range partial {
		if err := os.WriteFile(f, []byte("{\"half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the init to die", func() bool { return in.info(name).State == "stopped" })

	results, code = in.doctor()
	if code != 1 {
		t.Errorf("doctor exited %d with leftovers, want 1", code)
	}
	for check, want := range map[string]string{
		"network":           "bridge nch-" + in.store.ID + " is missing",
		"locks":             "ghost.lock",
		"mounts":            mnt + " is mounted",
		"host-dirs":         name,
		"runtime-state":     name,
		"run-records":       "run record of " + name,
		"container-cgroups": name,
	} {
		r := results[check]
		if r.Status != "fail" || !strings.Contains(r.Found, want) || !r.Fixable {
			t.Errorf("doctor's %s: %+v, want a fixable failure naming %q", check, r, want)
		}
	}
	for _, f := range partial {
		if r := results["partial-files"]; r.Status != "fail" || !strings.Contains(r.Found, f) || !r.Fixable {
			t.Errorf("doctor's partial-files: %+v, want a fixable failure naming %s", r, f)
		}
	}
	if r := in.run("doctor", "--fix"); r.code != 0 || !strings.Contains(r.stderr, "fixed: ") {
		t.Errorf("doctor --fix: %s", r)
	}
	results, code = in.doctor()
	for check, r := range results {
		if r.Status == "fail" {
			t.Errorf("after --fix, %s: %+v", check, r)
		}
	}
	if code != 0 {
		t.Errorf("doctor exited %d after --fix", code)
	}
	for _, f := range partial {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s is left after doctor --fix", f)
		}
	}
	in.must("start", name)
}
