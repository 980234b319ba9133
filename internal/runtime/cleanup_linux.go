package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups/systemd"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// A start can be killed at any point, and libcontainer writes its state
// (state.json) only once the init has been made and moved into its
// cgroups. So what a killed start leaves may be any of:
//
//   - a state directory holding only exec.fifo, or nothing: libcontainer's
//     Load then says the container does not exist;
//   - cgroups in every hierarchy, with a dying (or, had it got further,
//     waiting) init in them, and no state naming them;
//   - state of an init that still waits on its exec fifo (it never ran
//     the container's init: see Inspect);
//   - the host directory.
//
// Cleanup removes all of these from where they would be, not only from
// where libcontainer's state says they are.

// Place is where a container's runtime state is, whether or not
// libcontainer recorded it: what Cleanup looks at.
type Place struct {
	// StateRoot and Name: libcontainer's state directory is
	// StateRoot/Name.
	StateRoot, Name string
	// HostDir is the container's host directory (Container.HostDir).
	HostDir string
	// CgroupPath, or SystemdSlice and SystemdScopePrefix, say where its
	// cgroup is, as the same fields of Container.
	CgroupPath                       string
	SystemdSlice, SystemdScopePrefix string
}

// Place is where c's runtime state is.
func (c *Container) Place() Place {
	return Place{StateRoot: c.StateRoot, Name: c.Name, HostDir: c.HostDir, CgroupPath: c.CgroupPath,
		SystemdSlice: c.SystemdSlice, SystemdScopePrefix: c.SystemdScopePrefix}
}

// cgroup is the container's cgroup path below a hierarchy's root.
func (p Place) cgroup() string {
	if p.SystemdSlice == "" {
		return p.CgroupPath
	}
	slice, err := systemd.ExpandSlice(p.SystemdSlice)
	if err != nil {
		return ""
	}
	return filepath.Join(slice, p.SystemdScopePrefix+"-"+p.Name+".scope")
}

// Cleanup removes the runtime state, cgroups and host directory of a
// container whose init is gone or never ran, killing whatever is left of
// it, whatever a killed start or stop left: see above. It is idempotent.
// Preconditions: the container's lock is held and it is not running (a
// start in progress would be killed).
func Cleanup(p Place) error {
	if err := cleanupState(&p); err != nil {
		return err
	}
	return removeHostDir(p.HostDir)
}

// cleanupState is Cleanup but for the host directory; it learns that
// directory from libcontainer's state where p lacks it.
func cleanupState(p *Place) error {
	var dirs []string
	lc, err := libcontainer.Load(p.StateRoot, p.Name)
	if err == nil {
		if h := labelValue(lc.Config().Labels, hostDirLabel); h != "" {
			p.HostDir = h
		}
		if st, err := lc.State(); err == nil {
			for _, d := range st.CgroupPaths {
				dirs = append(dirs, d)
			}
		}
		_ = lc.Signal(unix.SIGKILL)
		if err := waitGone(lc, 10*time.Second); err != nil {
			return err
		}
		// How the init ended is known only while its cgroup is there.
		recordExit(lc, exitRecord{}, false)
		// Whatever libcontainer fails to remove, the rest does.
		_ = lc.Destroy()
		if c := lc.Config().Cgroups; c != nil && p.CgroupPath == "" && p.SystemdSlice == "" {
			if c.Systemd {
				p.SystemdSlice, p.SystemdScopePrefix = c.Parent, c.ScopePrefix
			} else {
				p.CgroupPath = c.Path
			}
		}
	}
	if path := p.cgroup(); path != "" {
		dirs = append(dirs, cgroupDirs(path)...)
	}
	// The parent stays (see RemoveEmptyCgroup).
	if err := removeCgroups(dirs, 10*time.Second); err != nil {
		return err
	}
	dir := filepath.Join(p.StateRoot, p.Name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing runtime state %s: %w", dir, err)
	}
	return nil
}

// cgroupDirs lists the directories of the cgroup path in every mounted
// hierarchy (one on cgroup v2, one per controller and the unified one on
// a v1 or hybrid host) where they exist.
func cgroupDirs(path string) []string {
	const mnt = "/sys/fs/cgroup"
	candidates := []string{filepath.Join(mnt, path)}
	hierarchies, _ := os.ReadDir(mnt)
	for _, h := range hierarchies {
		if h.IsDir() {
			candidates = append(candidates, filepath.Join(mnt, h.Name(), path))
		}
	}
	var dirs []string
	for _, d := range candidates {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// removeCgroups kills every process in the cgroup directories dirs and
// below them, waits until they are gone (for at most timeout) and
// removes the directories, children first (a container's systemd makes
// its own below its cgroup). Cgroup file systems hold no links.
func removeCgroups(dirs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := cgroupProcs(dirs)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroup %s %v after SIGKILL", pids, dirs[0], timeout)
		}
		for _, pid := range pids {
			killIn(pid, dirs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var errs []error
	for _, d := range dirs {
		var sub []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		for i := len(sub) - 1; i >= 0; i-- {
			if err := rmdirCgroup(sub[i], deadline); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup removes an empty cgroup directory. The kernel may still
// count a process that has just exited (EBUSY) for a moment.
func rmdirCgroup(dir string, deadline time.Time) error {
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cgroupProcs lists the processes in the cgroup directories and below.
func cgroupProcs(dirs []string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killIn sends SIGKILL to pid if it is still in one of the cgroup
// directories: the check is made through a pidfd, which a recycled PID
// cannot take over, so no process outside the container is signalled.
func killIn(pid int, dirs []string) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pidfd)
	if !inCgroups(pid, dirs) {
		return
	}
	_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
}

// inCgroups tells whether process pid is in one of the cgroup directories
// or below, from /proc/PID/cgroup.
func inCgroups(pid int, dirs []string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		// hierarchy-ID:controllers:path
		parts := bytes.SplitN(line, []byte(":"), 3)
		if len(parts) != 3 {
			continue
		}
		path := string(parts[2])
		for _, d := range dirs {
			rel := cgroupRel(d)
			if path == rel || strings.HasPrefix(path, rel+"/") {
				return true
			}
		}
	}
	return false
}

// cgroupRel is a cgroup directory's path below its hierarchy's root, as
// /proc/PID/cgroup shows it.
func cgroupRel(dir string) string {
	rel := strings.TrimPrefix(dir, "/sys/fs/cgroup")
	if rel == dir {
		return dir
	}
	// /cpu,cpuacct/nixcell/web or /unified/nixcell/web on a v1 host:
	// the hierarchy's mount point goes.
	if i := strings.IndexByte(rel[1:], '/'); i >= 0 && isHierarchy("/sys/fs/cgroup"+rel[:i+1]) {
		return rel[i+1:]
	}
	return rel
}

// isHierarchy tells whether dir is the root of a mounted cgroup hierarchy.
func isHierarchy(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// RemoveHostDir removes what a container's HostDir holds; Cleanup does it
// for a container with runtime state, this is for one without (a start
// killed before libcontainer recorded anything).
func RemoveHostDir(dir string) error { return removeHostDir(dir) }

func labelValue(labels []string, key string) string {
	for _, l := range labels {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

// Kill sends SIGKILL to the init, which takes every process of the PID
// namespace with it, waits until it is gone and removes the runtime state.
func Kill(p Place) error {
	if lc, err := libcontainer.Load(p.StateRoot, p.Name); err == nil {
		if st, err := lc.Status(); err == nil && st != libcontainer.Stopped {
			_ = lc.Signal(unix.SIGKILL)
			if waitGone(lc, 10*time.Second) == nil {
				recordExit(lc, exitRecord{Stopped: true}, true)
			}
		}
	}
	return Cleanup(p)
}

func waitGone(lc *libcontainer.Container, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := lc.Status()
		if err != nil || st == libcontainer.Stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("init still running %v after SIGKILL", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CgroupsUnder lists the container cgroups below parent (a path such as
// /nixcell) in any hierarchy, by directory name.
func CgroupsUnder(parent string) []string {
	seen := map[string]bool{}
	var names []string
	for _, d := range cgroupDirs(parent) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				names = append(names, e.Name())
			}
		}
	}
	return names
}

// RemoveCgroup removes a container's cgroup in every hierarchy, killing
// what still runs in it. It is for a cgroup whose runtime state is gone
// (Cleanup removes the others). Its parent stays (see RemoveEmptyCgroup).
func RemoveCgroup(path string) error {
	return removeCgroups(cgroupDirs(path), 10*time.Second)
}

// RemoveEmptyCgroup removes the cgroup path, and then its parents, in
// every mounted hierarchy, as far as they are empty: the parent that
// libcontainer made for a container's cgroup (it removes only the leaf).
// Neither Cleanup nor a failed start removes that parent, which the
// instance's containers share: a start in it (libcontainer makes the
// parent, then its own cgroup below) would find it gone between the two,
// and fail. The caller makes sure that no start runs (nixcell: an empty
// run table, under the global lock, which a start enters first).
func RemoveEmptyCgroup(path string) {
	const mnt = "/sys/fs/cgroup"
	hierarchies, _ := os.ReadDir(mnt)
	parents := []string{}
	for p := path; p != "/" && p != "."; p = filepath.Dir(p) {
		parents = append(parents, p)
	}
	dirs := []string{mnt}
	for _, h := range hierarchies {
		if h.IsDir() {
			dirs = append(dirs, filepath.Join(mnt, h.Name()))
		}
	}
	for _, d := range dirs {
		for _, p := range parents {
			if err := unix.Rmdir(filepath.Join(d, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				break
			}
		}
	}
}
