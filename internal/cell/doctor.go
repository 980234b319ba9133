package cell

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/doctor"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/state"
)

// Doctor checks the host (package doctor's checks, and whether this
// nixcell was built with seccomp) and the instance: its network as its
// running containers need it, and what is left of containers that no
// longer run or exist.
func (m *Manager) Doctor() []doctor.Result {
	checks := append(doctor.Host(), doctor.Check{Name: "seccomp-build", Run: func() doctor.Result {
		if err := runtime.SeccompBuilt(); err != nil {
			return doctor.Result{Status: doctor.Fail, Found: err.Error(), Fix: "rebuild nixcell with cgo and -tags seccomp"}
		}
		return doctor.Result{Status: doctor.OK, Found: "built with seccomp"}
	}})
	results := doctor.Run(checks)
	return append(results, m.instanceChecks()...)
}

// leftover is something of a container that its state does not explain,
// and how doctor --fix removes it.
type leftover struct {
	check, what string
	fix         func(ctx context.Context) error
}

func (m *Manager) instanceChecks() []doctor.Result {
	found, err := m.leftovers()
	if err != nil {
		return []doctor.Result{{Check: "leftovers", Status: doctor.Fail, Found: err.Error()}}
	}
	byCheck := map[string][]string{}
	for _, l := range found {
		byCheck[l.check] = append(byCheck[l.check], l.what)
	}
	var out []doctor.Result
	for _, c := range leftoverChecks {
		r := doctor.Result{Check: c.name, Status: doctor.OK, Found: c.none}
		if w := byCheck[c.name]; len(w) > 0 {
			r = doctor.Result{Check: c.name, Status: doctor.Fail, Found: strings.Join(w, "; "), Fix: "nixcell doctor --fix", Fixable: true}
		}
		out = append(out, r)
	}
	return out
}

// leftoverChecks are the instance's checks, in order, with what each says
// when it finds nothing.
var leftoverChecks = []struct{ name, none string }{
	{"network", "the bridges and tables are as the running containers need them"},
	{"run-records", "every run record is a live start or init"},
	{"runtime-state", "no runtime state of a container that does not run"},
	{"host-dirs", "no host directory of a container that does not run"},
	{"mounts", "nothing of the instance is mounted in the host's namespace"},
	{"container-cgroups", "no cgroup of a container that does not run"},
	{"links", "no network interface of a container that does not run"},
	{"locks", "no lock file of a container that does not exist"},
	{"addresses", "no address or port held for a container that does not exist"},
	{"id-ranges", "no ID range of a removed instance"},
	{"partial-files", "no file half-written by a command that was killed"},
}

// Fix removes what Doctor reports as left over and returns what it
// removed.
func (m *Manager) Fix(ctx context.Context) ([]string, error) {
	found, err := m.leftovers()
	if err != nil {
		return nil, err
	}
	var fixed []string
	var errs []error
	for _, l := range found {
		if err := l.fix(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.what, err))
			continue
		}
		fixed = append(fixed, l.what)
	}
	return fixed, errors.Join(errs...)
}

func (m *Manager) leftovers() ([]leftover, error) {
	var out []leftover
	add := func(check, what string, fix func(context.Context) error) {
		out = append(out, leftover{check, what, fix})
	}
	names, err := m.Store.Names()
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	running := map[string]bool{}
	for _, n := range names {
		exists[n] = true
		if st, err := runtime.Inspect(m.Store.RuntimeRoot(), n); err == nil && st.Running {
			running[n] = true
		}
	}
	// The network and the run table.
	netst, err := m.Net.Load()
	if err != nil {
		return nil, err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return nil, err
	}
	resync := func(ctx context.Context) error { return m.resyncNetwork(ctx) }
	for _, name := range sortedKeys(runs) {
		if !runs[name].Holds(exactlyAlive) {
			add("run-records", fmt.Sprintf("run record of %s, whose start or init is gone", name), resync)
		}
	}
	if problem := networkProblem(netst, runs); problem != "" {
		add("network", problem, resync)
	}
	for _, name := range sortedKeys(netst.Addresses) {
		if !exists[name] {
			name := name
			add("addresses", fmt.Sprintf("addresses of %s, which does not exist", name), func(ctx context.Context) error { return m.releaseAddresses(ctx, name) })
		}
	}
	// What the runtime leaves of a container that does not run; mounts
	// first, which host directories cannot go before.
	mounts, err := runtime.MountsUnder(m.Store.Run)
	if err != nil {
		return nil, err
	}
	for _, mp := range mounts {
		mp := mp
		add("mounts", mp+" is mounted in the host's namespace", func(context.Context) error { return unix.Unmount(mp, unix.MNT_DETACH) })
	}
	for _, dir := range []struct {
		check, path string
		fix         func(name string) func(context.Context) error
	}{
		{"runtime-state", m.Store.RuntimeRoot(), func(name string) func(context.Context) error {
			return func(context.Context) error { return runtime.Cleanup(m.place(name)) }
		}},
		{"host-dirs", filepath.Join(m.Store.Run, "host"), func(name string) func(context.Context) error {
			return func(context.Context) error { return runtime.RemoveHostDir(m.Store.HostDir(name)) }
		}},
	} {
		entries, err := os.ReadDir(dir.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		for _, e := range entries {
			if !running[e.Name()] {
				add(dir.check, fmt.Sprintf("%s of %s, which does not run", filepath.Join(dir.path, e.Name()), e.Name()), dir.fix(e.Name()))
			}
		}
	}
	for _, leaf := range runtime.CgroupsUnder(m.Store.CgroupParent) {
		if !running[state.ContainerOfCgroup(leaf)] {
			path := m.Store.CgroupParent + "/" + leaf
			add("container-cgroups", fmt.Sprintf("cgroup %s of a container that does not run", path), func(context.Context) error {
				return runtime.RemoveCgroup(path)
			})
		}
	}
	members := map[string]bool{}
	for name := range runs {
		if runs[name].Holds(exactlyAlive) {
			members[name] = true
		}
	}
	stray := func() []string {
		var out []string
		for _, link := range network.ContainerLinks(netst.Settings) {
			owner := ""
			for _, name := range names {
				if network.IsLinkOf(netst.Settings, link, name) {
					owner = name
				}
			}
			if owner == "" || !members[owner] {
				out = append(out, link)
			}
		}
		return out
	}
	// A stopped container's host interfaces go with its network namespace,
	// which the kernel tears down after the init is gone, not at once (stop
	// leaves them to it; destroy removes them): what is still there is
	// looked at again for a while before it counts.
	links := stray()
	for deadline := time.Now().Add(3 * time.Second); len(links) > 0 && time.Now().Before(deadline); links = stray() {
		time.Sleep(50 * time.Millisecond)
	}
	for _, link := range links {
		add("links", fmt.Sprintf("interface %s of a container that does not run", link), func(context.Context) error { return network.DeleteLink(link) })
	}
	// Lock files of containers that do not exist, unless someone holds one
	// (a create in progress).
	locks, _ := filepath.Glob(filepath.Join(m.Store.Root, "locks", "*.lock"))
	for _, l := range locks {
		name := strings.TrimSuffix(filepath.Base(l), ".lock")
		if exists[name] {
			continue
		}
		if h, err := lockfile.TryLock(l); err == nil {
			_ = h.Unlock()
			l := l
			add("locks", fmt.Sprintf("lock file %s of a container that does not exist", l), func(context.Context) error {
				h, err := lockfile.TryLock(l)
				if err != nil {
					return err
				}
				return h.Remove()
			})
		}
	}
	// Half-written files, of files nobody writes now: a writer holds
	// the lock that the check takes.
	if lock, err := lockfile.TryLock(m.Store.GlobalLockPath()); err == nil {
		var found []string
		for _, f := range m.instanceFiles() {
			found = append(found, atomicfile.Leftovers(f)...)
		}
		_ = lock.Unlock()
		for _, f := range found {
			f := f
			add("partial-files", f+", half-written", func(ctx context.Context) error {
				lock, err := lockfile.Lock(ctx, m.Store.GlobalLockPath())
				if err != nil {
					return err
				}
				defer lock.Unlock()
				return m.removeInstanceLeftovers()
			})
		}
	}
	for _, name := range names {
		if rec, err := m.Store.Load(name); err != nil || rec.Phase != state.Created {
			continue // a create or destroy that did not finish: the locks check or the next destroy
		}
		lock, err := lockfile.TryLock(m.Store.ContainerLockPath(name))
		if err != nil {
			continue
		}
		found := m.Store.Partial(name)
		_ = lock.Unlock()
		for _, f := range found {
			name := name
			add("partial-files", f+", left by a command on "+name+" that was killed", func(ctx context.Context) error {
				lock, err := m.Store.Lock(ctx, name)
				if err != nil {
					return err
				}
				defer lock.Unlock()
				return m.Store.RemovePartial(name)
			})
		}
	}
	stale, err := m.IDs.Stale()
	if err != nil {
		return nil, err
	}
	if len(stale) > 0 {
		var what []string
		for _, a := range stale {
			what = append(what, fmt.Sprintf("%s of removed instance %s", a.Container, a.Instance))
		}
		add("id-ranges", "ID ranges of "+strings.Join(what, ", "), func(ctx context.Context) error {
			_, err := m.IDs.Reclaim(ctx)
			return err
		})
	}
	return out, nil
}

// networkProblem says what of the host's network does not match what the
// running containers need ("" when all is well).
func networkProblem(st network.State, runs state.Runs) string {
	status := network.ReadStatus(st.Settings, "")
	var problems []string
	needHostOnly, needNAT := false, false
	for _, a := range st.Addresses {
		needHostOnly = needHostOnly || a.HostOnly4.IsValid()
		needNAT = needNAT || a.NAT4.IsValid()
	}
	for i, b := range status.Bridges {
		need := i == 0 && needHostOnly || i == 1 && needNAT
		switch {
		case need && !b.Exists && len(runs) > 0:
			problems = append(problems, "bridge "+b.Name+" is missing")
		case need && b.Exists && len(b.Missing) > 0:
			problems = append(problems, fmt.Sprintf("bridge %s lacks %s", b.Name, strings.Join(b.Missing, ", ")))
		}
	}
	if len(runs) > 0 && (needHostOnly || needNAT) && !status.TablesPresent {
		problems = append(problems, "nftables table "+status.Table+" is missing")
	}
	return strings.Join(problems, "; ")
}

// resyncNetwork drops run records that no longer hold and applies the
// network from scratch (nft included), as the next change would.
func (m *Manager) resyncNetwork(ctx context.Context) error {
	return m.changeNetwork(ctx, func(st *network.State, runs state.Runs) error {
		st.Applied = ""
		m.prune(runs, exactlyAlive)
		return nil
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
