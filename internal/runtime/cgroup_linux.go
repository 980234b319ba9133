package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixcell/nixcell/internal/trace"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// A container gets a cgroup2 hierarchy at /sys/fs/cgroup, mounted inside
// its cgroup namespace so that its root is the container's own cgroup, and
// that cgroup is delegated to the container's root (owned by it), as
// systemd in a container requires. On a cgroup v1 "hybrid" host the
// unified hierarchy (/sys/fs/cgroup/unified) is the one used: it has no
// controllers there, but systemd manages its processes with it. A host
// without cgroup2 gives the container no cgroup file system.

// unifiedMount returns where the host's cgroup2 hierarchy is mounted, or
// "" when it has none.
func unifiedMount() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// delegatedFiles are the files of a cgroup2 directory that its delegatee
// writes, besides the directory itself (the kernel's cgroup-v2
// documentation, "Delegation Containment").
var delegatedFiles = []string{"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"}

// delegateCgroup makes the container's cgroup2 directory and its
// delegated files owned by the container's root. Preconditions: the init
// has been created (libcontainer made the cgroup) and not yet started.
func (c *Container) delegateCgroup(lc *libcontainer.Container) error {
	mnt := unifiedMount()
	if mnt == "" || c.Privileged() {
		return nil
	}
	dir := filepath.Join(mnt, c.CgroupPath)
	if st, err := lc.State(); err == nil && st.CgroupPaths[""] != "" {
		dir = st.CgroupPaths[""] // where libcontainer (or systemd) made it
	} else if st, err := lc.State(); err == nil && mnt == "/sys/fs/cgroup/unified" && st.CgroupPaths["unified"] != "" {
		dir = st.CgroupPaths["unified"]
	}
	root := int(c.IDs.Start)
	if err := os.Chown(dir, root, root); err != nil {
		return fmt.Errorf("delegating cgroup %s: %w", dir, err)
	}
	for _, f := range delegatedFiles {
		err := os.Chown(filepath.Join(dir, f), root, root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delegating cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// WarmCgroupMoves hides the wait that moving the new init into its
// cgroups costs, by paying it in parallel with the rest of a start, and
// returns the function that ends it (which may be called more than once).
//
// Every move of a process between cgroups takes one lock of the whole
// kernel (cgroup_threadgroup_rwsem) for writing, and a writer that finds
// it idle first waits an RCU grace period (5-15 ms here; the kernel skips
// that only with the cgroup2 mount option favordynmods, which makes every
// fork and exit on the host a little slower for good). Once a writer has
// paid it, the lock stays in its writer-friendly mode for one more grace
// period after the last writer left, and writers in that time do not
// wait. So while a start runs, a goroutine moves this process into the
// cgroup it already is in (which changes nothing) every millisecond:
// the first of those pays the grace period while the start does other
// work, and libcontainer's move of the init then finds the lock warm.
// Forks and exits on the host take the slower path only for those
// milliseconds. It does nothing where this process's own cgroup cannot be
// found or written.
//
// It stops by itself after warmLimit, should its caller wait that long
// for something else (a container's lock behind a long update).
//
// For `nixcell start`, the first move is made sooner still, from a C
// constructor before the Go runtime starts (warmearly_linux.c): begun
// ≈ 4 ms sooner, the grace period is paid before libcontainer moves the
// init (libcontainer's phase 25.8 → 22.0 ms, medians of 25), and the
// moves made here find the lock warm.
//
// The trace shows how long the first move took ("cgroup lock warmed").
func WarmCgroupMoves(tr *trace.Trace) (stop func()) {
	const warmLimit = 10 * time.Second
	procs := ownCgroupProcs()
	done := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(done) }) }
	if procs == "" {
		return stop
	}
	go func() {
		f, err := os.OpenFile(procs, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		pid := []byte(strconv.Itoa(os.Getpid()))
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		warmed := tr.Beside("cgroup lock warmed")
		limit := time.Now().Add(warmLimit)
		for time.Now().Before(limit) {
			if _, err := f.Write(pid); err != nil {
				return
			}
			if warmed != nil {
				warmed()
				warmed = nil
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return stop
}

// ownCgroupProcs returns the cgroup.procs file of this process's cgroup
// in the cgroup2 hierarchy, or in a cgroup v1 hierarchy on a host without
// one; "" when there is none.
func ownCgroupProcs() string {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	unified := unifiedMount()
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		id, rest, _ := strings.Cut(line, ":")
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		var dir string
		switch {
		case id == "0" && controllers == "" && unified != "":
			dir = filepath.Join(unified, path)
		case unified == "" && controllers != "" && !strings.Contains(controllers, "="):
			dir = filepath.Join("/sys/fs/cgroup", strings.Split(controllers, ",")[0], path)
		default:
			continue
		}
		if p := filepath.Join(dir, "cgroup.procs"); unix.Access(p, unix.W_OK) == nil {
			return p
		}
	}
	return ""
}
