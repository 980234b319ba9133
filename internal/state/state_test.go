package state

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// TestNoNameCollides: whatever a container is named, its files and its
// cgroup are its own: none is a file of nixcell's own (the global lock,
// the network state, the run table, the name server's lock and table) or
// a file of the cgroup directory above it (cgroup v1's tasks).
func TestNoNameCollides(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	own := []string{s.GlobalLockPath(), s.NetworkPath(), s.IDMapPath(), s.RunsPath(), filepath.Join(s.Run, "dns.lock"), s.NameServerTablePath()}
	names := []string{"global", "network", "idmap", "runs", "dns", "containers", "locks", "host", "tasks", "cgroup", "notify", "release"}
	for _, n := range names {
		if err := spec.ValidateName(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		mine := []string{s.ContainerLockPath(n), s.Dir(n), s.HostDir(n), filepath.Join(s.RuntimeRoot(), n)}
		for _, a := range mine {
			for _, b := range own {
				if a == b || strings.HasPrefix(b, a+"/") {
					t.Errorf("container %s: %s is nixcell's own %s", n, a, b)
				}
			}
		}
		leaf := filepath.Base(s.CgroupPath(n))
		if cgroupFiles[leaf] || strings.Contains(leaf, ".") {
			t.Errorf("container %s: its cgroup %s is a cgroup file's name", n, leaf)
		}
		if got := ContainerOfCgroup(leaf); got != n {
			t.Errorf("ContainerOfCgroup(%q) = %q, want %q", leaf, got, n)
		}
	}
}

// TestGlobalNameLocks: a container named global takes its own lock, not
// the instance's (which deadlocked the instance: issue 13, item 2).
func TestGlobalNameLocks(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h, err := s.Lock(ctx, "global")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unlock()
	g, err := lockfile.Lock(ctx, s.GlobalLockPath())
	if err != nil {
		t.Fatalf("the instance's lock while container global's is held: %v", err)
	}
	g.Unlock()
}
