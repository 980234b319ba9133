package state

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/testutil"
)

// The readers of the state files are fuzzed with the files' bytes, written
// where the store reads them: whatever a damaged or hand-edited file
// holds, the reader gives an error or a record the commands can use, and
// what it gives is written back (Save, SaveRuns) as it was read.

// fuzzStore is a store in a directory of the fuzz target's own, which its
// executions share: each worker runs them one at a time, and each writes
// the file it reads.
func fuzzStore(f *testing.F) Store {
	dir := f.TempDir()
	return Store{Root: filepath.Join(dir, "state"), Run: filepath.Join(dir, "run"), CgroupParent: "/nixcell-fuzz"}
}

// FuzzContainerRecord: Load of a container.json gives the record of that
// container or an error, and the record saves as it was read.
func FuzzContainerRecord(f *testing.F) {
	for _, s := range []string{
		`{"name": "web", "phase": "created", "createdAt": "2026-11-23T12:00:00Z", "source": {"configFile": "/etc/web.nix"},
		  "spec": {"network": {"ip": "10.101.0.5/32", "forwardPorts": [{"protocol": "tcp", "hostPort": 80, "containerPort": 8080}]},
		  "limits": {"memoryBytes": 536870912, "cpus": 1.5}}, "uuid": "5d3c5f2e-0000-4000-8000-000000000000",
		  "limitOverrides": {"pids": 100}}`,
		`{"name": "web", "phase": "creating", "createdAt": "2026-11-23T13:00:00.123456789+01:00", "spec": {"network": {}, "limits": {}}}`,
		`{"name": "other", "phase": "created"}`,
		`{"name": "web", "spec": {"network": {"ip": "not an address"}}}`,
		`{"name": "web", "createdAt": "yesterday"}`,
		`null`, `{}`, ``, `{"name": "web"`, `[]`,
	} {
		f.Add([]byte(s))
	}
	s := fuzzStore(f)
	if err := os.MkdirAll(s.Dir("web"), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(s.Dir("web"), "container.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := s.Load("web")
		if err != nil {
			if !strings.Contains(err.Error(), `"web"`) {
				t.Fatalf("the error does not name the container: %v", err)
			}
			return
		}
		if c.Name != "web" {
			t.Fatalf("containers/web/container.json read as the record of %q", c.Name)
		}
		_ = c.Limits().String()
		if first, second := testutil.Reencoded(t, *c); !bytes.Equal(first, second) {
			t.Fatalf("the record %s is saved as\n%s\nand then as\n%s", data, first, second)
		}
	})
}

// FuzzRunTable: LoadRuns of any runs.json gives a table the commands can
// change (a torn one is empty), whose records survive SaveRuns.
func FuzzRunTable(f *testing.F) {
	for _, s := range []string{
		`{"web": {"phase": "running", "init": {"pid": 1234, "startedAt": "2026-11-23T12:00:00Z"}, "generation": 3,
		  "system": "/nix/store/aaaa-nixos-system", "network": {"enableNat": true}}}`,
		`{"web": {"phase": "starting", "owner": {"pid": 99, "startedAt": "2026-11-23T12:00:00Z"}, "network": {}}, "db": {"phase": "running"}}`,
		`{"web": {"phase": "running", "switching": "/nix/store/bbbb-nixos-system", "netns": "/var/run/netns/x", "network": {}}}`,
		`{"../x": {"phase": "weird", "init": {"pid": -1}}}`,
		`null`, `{}`, ``, `{"web": `, `{"web": null}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	s := fuzzStore(f)
	if err := os.MkdirAll(s.Run, 0o711); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(s.runsPath(), data, 0o600); err != nil {
			t.Fatal(err)
		}
		runs, err := s.LoadRuns()
		if err != nil {
			t.Fatalf("LoadRuns of %q: %v (a torn table reads as empty)", data, err)
		}
		if runs == nil {
			t.Fatalf("LoadRuns of %q gave a nil table, which a start cannot add to", data)
		}
		dead := func(Process) bool { return false }
		for name, r := range runs {
			if r.Holds(dead) {
				t.Fatalf("the record of %q holds with no process alive: %+v", name, r)
			}
		}
		runs["fuzz"] = Run{Phase: Starting, Owner: Process{Pid: os.Getpid(), StartedAt: time.Now()}}
		if first, second := testutil.Reencoded(t, runs); !bytes.Equal(first, second) {
			t.Fatalf("the run table %s is saved as\n%s\nand then as\n%s", data, first, second)
		}
		// MayHaveRun never misses a container's record in a saved table.
		if err := s.SaveRuns(runs); err != nil {
			t.Fatal(err)
		}
		for name := range runs {
			if may, err := s.MayHaveRun(name); spec.ValidateName(name) == nil && (err != nil || !may) {
				t.Fatalf("MayHaveRun(%q) = %v, %v of a saved table that holds it", name, may, err)
			}
		}
		if may, err := s.MayHaveRun("absent"); err != nil || may && !bytes.Contains(data, []byte(`absent`)) {
			t.Fatalf("MayHaveRun of a name the table lacks: %v, %v", may, err)
		}
	})
}

// FuzzStorePaths: every valid container name has paths of its own, in its
// directories, apart from nixcell's own files and from every other
// container's, and a cgroup that maps back to it.
func FuzzStorePaths(f *testing.F) {
	for _, s := range []string{"web", "global", "tasks", "notify-on-release", "release-agent", "containers", "locks", "a"} {
		f.Add(s)
	}
	s := Store{Root: "/var/lib/nixcell", Run: "/run/nixcell", CgroupParent: "/nixcell"}
	own := map[string]bool{s.GlobalLockPath(): true, s.NetworkPath(): true, s.IDMapPath(): true, s.RunsPath(): true,
		s.NameServerLockPath(): true, s.ConsoleLockPath(): true, s.ConsoleSocketPath(): true, s.RuntimeRoot(): true,
		s.containersDir(): true, s.locksDir(): true}
	f.Fuzz(func(t *testing.T, name string) {
		if spec.ValidateName(name) != nil {
			return
		}
		for what, p := range map[string]string{"state directory": s.Dir(name), "lock": s.ContainerLockPath(name), "host directory": s.HostDir(name)} {
			if own[p] {
				t.Fatalf("the %s of %q is nixcell's own %s", what, name, p)
			}
		}
		if filepath.Dir(s.Dir(name)) != s.containersDir() || filepath.Dir(s.ContainerLockPath(name)) != s.locksDir() {
			t.Fatalf("the paths of %q leave their directories: %s, %s", name, s.Dir(name), s.ContainerLockPath(name))
		}
		leaf := CgroupLeaf(name)
		if strings.Contains(leaf, "/") || strings.Contains(leaf, ".") || ContainerOfCgroup(leaf) != name {
			t.Fatalf("the cgroup of %q is %q, which maps back to %q", name, leaf, ContainerOfCgroup(leaf))
		}
		if cgroupFiles[leaf] {
			t.Fatalf("the cgroup of %q is a cgroup file's name", name)
		}
	})
}
