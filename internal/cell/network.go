package cell

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/systemd"
	"github.com/nixcell/nixcell/internal/trace"
)

// allocateAddresses gives the container the addresses its network settings
// need, keeping those it holds; a fixed address another container holds is
// an error and changes nothing.
func (m *Manager) allocateAddresses(ctx context.Context, rec *state.Container) error {
	return m.Net.Update(ctx, func(st *network.State) error {
		a, err := st.Settings.Allocate(rec.Name, rec.Spec.Network, st.Addresses[rec.Name], st.Addresses)
		if err != nil {
			return err
		}
		if err := st.ClaimPorts(rec.Name, rec.Spec.Network.ForwardPorts); err != nil {
			return err
		}
		st.Addresses[rec.Name] = a
		return nil
	})
}

// releaseAddresses frees the container's addresses and ports, and takes
// down what of the host's network no remaining container needs.
func (m *Manager) releaseAddresses(ctx context.Context, name string) error {
	return m.changeNetwork(ctx, func(st *network.State, runs state.Runs) error {
		// Even a container stopped a moment ago may still have its
		// interfaces, until the kernel has removed its network namespace.
		_ = st.Settings.DetachContainer(name)
		delete(st.Addresses, name)
		delete(st.Ports, name)
		delete(runs, name)
		return nil
	})
}

// changeNetwork changes the network state and the run table together,
// under the global lock: f changes them; run records that no longer hold
// (their init died on its own, the command that started them was killed)
// are dropped; and the host's network is brought to what the remaining
// ones need. Nothing is saved when f or the network fails. It finishes
// even when ctx is cancelled: it is how every start, stop and failure
// leaves the host's network in order.
func (m *Manager) changeNetwork(ctx context.Context, f func(st *network.State, runs state.Runs) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := m.Net.Update(ctx, func(st *network.State) error {
		if err := m.removeInstanceLeftovers(); err != nil {
			return err
		}
		runs, err := m.Store.LoadRuns()
		if err != nil {
			return err
		}
		if f != nil {
			if err := f(st, runs); err != nil {
				return err
			}
		}
		m.prune(runs, exists)
		desired := st.Desired(members(runs), m.host)
		if err := st.ApplyDesired(desired); err != nil {
			return err
		}
		if err := m.Store.SaveRuns(runs); err != nil {
			return err
		}
		// The name server follows the run table through its own table.
		if err := network.WriteNameTable(m.Store.NameServerTablePath(), desired, len(runs)); err != nil {
			return err
		}
		m.removeCgroupParent(runs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// changeRuns changes the run table alone, under the global lock, for a
// change that leaves the host's network as it is (a start that reached its
// init, a switch in place).
func (m *Manager) changeRuns(ctx context.Context, f func(runs state.Runs) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	lock, err := lockfile.Lock(ctx, m.Store.GlobalLockPath())
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if err := m.removeInstanceLeftovers(); err != nil {
		return err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return err
	}
	if err := f(runs); err != nil {
		return err
	}
	if err := m.Store.SaveRuns(runs); err != nil {
		return err
	}
	m.removeCgroupParent(runs)
	return nil
}

// removeCgroupParent removes the cgroup its containers' cgroups are made
// in once none runs or starts: runs, the run table, holds none, and no
// start claims it (claimCgroupParent). A start makes its cgroup while its
// network, which enters it in the run table, comes up beside; its claim
// covers the time until then. Preconditions: the global lock is held.
func (m *Manager) removeCgroupParent(runs state.Runs) {
	if len(runs) > 0 {
		return
	}
	claims, err := lockfile.TryLock(m.Store.CgroupParentLockPath())
	if err != nil {
		return // a start makes its cgroup there; the next change removes it
	}
	defer claims.Unlock()
	runtime.RemoveEmptyCgroup(m.Store.CgroupParent)
}

// claimCgroupParent keeps the cgroup parent (see removeCgroupParent) until
// release is called.
func (m *Manager) claimCgroupParent(ctx context.Context) (release func(), err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	h, err := lockfile.LockShared(ctx, m.Store.CgroupParentLockPath())
	if err != nil {
		return nil, err
	}
	return func() { _ = h.Unlock() }, nil
}

// tidyCgroupParent removes the cgroup parent if nothing uses it, after a
// start that failed before it entered the run table.
func (m *Manager) tidyCgroupParent(ctx context.Context) error {
	return m.changeRuns(ctx, func(state.Runs) error { return nil })
}

// instanceFiles are the instance's files that the global lock guards.
func (m *Manager) instanceFiles() []string {
	return []string{m.Net.Path, m.Store.RunsPath(), m.Store.NameServerTablePath(), m.Store.NetworkAppliedPath()}
}

// removeInstanceLeftovers removes what writes of the instance's files
// that were killed before their rename left. Preconditions: the global
// lock is held.
func (m *Manager) removeInstanceLeftovers() error {
	for _, f := range m.instanceFiles() {
		if err := atomicfile.RemoveLeftovers(f); err != nil {
			return err
		}
	}
	return nil
}

// instanceLeftovers tells whether a write of the instance's files was
// killed before its rename (without the lock: a write under way counts).
func (m *Manager) instanceLeftovers() bool {
	for _, f := range m.instanceFiles() {
		if len(atomicfile.Leftovers(f)) > 0 {
			return true
		}
	}
	return false
}

// members are the containers of the run table that have nixcell's network
// (not those that joined another's namespace).
func members(runs state.Runs) []network.Member {
	var ms []network.Member
	for name, r := range runs {
		if r.NetNS == "" {
			ms = append(ms, network.Member{Name: name, Network: r.Network})
		}
	}
	return ms
}

// prune drops the run records that no longer hold by alive (exists or
// exactlyAlive). A start whose command was killed after the init was made
// counts as running when that init lives. Preconditions: the global lock
// is held.
func (m *Manager) prune(runs state.Runs, alive func(state.Process) bool) {
	for name, r := range runs {
		if r.Holds(alive) {
			continue
		}
		if r.Phase == state.Starting {
			if st, err := runtime.Inspect(m.Store.RuntimeRoot(), name); err == nil && st.Running {
				r.Phase, r.Owner, r.Init = state.Running, state.Process{}, state.Process{Pid: st.Pid, StartedAt: st.StartedAt}
				runs[name] = r
				continue
			}
		}
		delete(runs, name)
	}
}

// exists is how every network change prunes, a start's among them: it
// only asks whether each record's process exists (≈ 0.5 µs) instead of
// reading when it started (≈ 20 µs each, 4 ms with 200 running). The
// record of an init that died and whose PID went to another process stays
// until the next command on that container, which checks it exactly (runOf)
// and replaces or removes it, or until doctor finds it (exactlyAlive).
func exists(p state.Process) bool { return runtime.Exists(p.Pid) }

// exactlyAlive tells whether the very process that p names still runs.
func exactlyAlive(p state.Process) bool { return runtime.Alive(p.Pid, p.StartedAt) }

// netStart records a start of the container in the run table and brings
// the host's network to what it needs (its addresses, the bridges, the
// rules with its forwards). It returns the plan of its interfaces, for
// the runtime to set up before the init runs.
func (m *Manager) netStart(ctx context.Context, name string, run state.Run) (network.Plan, error) {
	var plan network.Plan
	err := m.changeNetwork(ctx, func(st *network.State, runs state.Runs) error {
		if run.NetNS == "" {
			a, err := st.Settings.Allocate(name, run.Network, st.Addresses[name], st.Addresses)
			if err != nil {
				return err
			}
			st.Addresses[name] = a
			if err := checkRunPorts(st, runs, name, run.Network.ForwardPorts); err != nil {
				return err
			}
			plan = st.Settings.PlanFor(name, run.Network, a)
		}
		runs[name] = run
		return nil
	})
	return plan, err
}

// besideNetwork is a start's netStart running beside the container's
// creation.
type besideNetwork struct {
	done chan struct{}
	// plan and err are netStart's; applied tells that it changed the host
	// (the start's undo takes it back), even when err is set by what came
	// after it.
	plan    network.Plan
	err     error
	applied bool
}

// netStartBeside runs netStart on its own goroutine, then makes sure the
// container names resolve. The start goes on meanwhile: most of its time
// is the runtime's setup of the init, which needs the network only when
// the init's interfaces are configured.
func (m *Manager) netStartBeside(ctx context.Context, name string, run state.Run) *besideNetwork {
	n := &besideNetwork{done: make(chan struct{})}
	go func() {
		defer close(n.done)
		end := trace.From(ctx).Beside("host network")
		defer end()
		n.plan, n.err = m.netStart(ctx, name, run)
		if n.err != nil {
			return
		}
		n.applied = true
		if n.err = failpoint.Hit("start/network-ready"); n.err != nil {
			return
		}
		if len(n.plan.Interfaces) > 0 && n.plan.Interfaces[0].Bridge != "" {
			if err := m.ensureDNS(); err != nil {
				m.warnf("container names will not resolve in %s: %v", name, err)
			}
		}
	}()
	return n
}

// wait waits for netStart and tells whether it changed the host.
func (n *besideNetwork) wait() (applied bool) {
	<-n.done
	return n.applied
}

// checkRunPorts refuses forwards of a run that another container claims
// or forwards in its own run.
func checkRunPorts(st *network.State, runs state.Runs, name string, ports []spec.PortForward) error {
	claims := maps.Clone(st.Ports)
	if claims == nil {
		claims = map[string][]spec.PortForward{}
	}
	for other, r := range runs {
		if other != name {
			claims[other] = append(slices.Clone(claims[other]), r.Network.ForwardPorts...)
		}
	}
	return network.CheckPorts(name, ports, claims)
}

// netStop forgets the container's run and takes its network off the
// host: its rules and name go; with detach its interfaces are removed at
// once (otherwise the kernel removes them with its network namespace, a
// moment later).
func (m *Manager) netStop(ctx context.Context, name string, detach bool) error {
	return m.changeNetwork(ctx, func(st *network.State, runs state.Runs) error {
		if detach {
			_ = st.Settings.DetachContainer(name)
		}
		delete(runs, name)
		return nil
	})
}

// runOf returns the run record of a container whose init is the live one
// status reports; ok is false when it does not run or the record belongs
// to an earlier init.
func runOf(runs state.Runs, name string, status runtime.Status) (state.Run, bool) {
	r, ok := runs[name]
	if !status.Running || !ok || r.Init.Pid != status.Pid || !r.Init.StartedAt.Equal(status.StartedAt) {
		return state.Run{}, false
	}
	return r, true
}

// Addresses are a container's addresses as show-ip reports them.
type Addresses struct {
	IPv4 string `json:"ipv4"`
	IPv6 string `json:"ipv6"`
	// NATIPv4 and NATIPv6 are on its "internet" interface, when it has one.
	NATIPv4 string `json:"natIPv4,omitempty"`
	NATIPv6 string `json:"natIPv6,omitempty"`
	// HostNetwork: it shares the host's addresses.
	HostNetwork bool `json:"hostNetwork,omitempty"`
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// ShowIP reports the container's addresses.
func (m *Manager) ShowIP(name string) (Addresses, error) {
	rec, err := m.Store.Load(name)
	if err != nil {
		return Addresses{}, err
	}
	st, err := m.Net.Load()
	if err != nil {
		return Addresses{}, err
	}
	return m.addresses(rec, st), nil
}

func (m *Manager) addresses(rec *state.Container, st network.State) Addresses {
	n := rec.Spec.Network
	a := st.Addresses[rec.Name]
	out := Addresses{
		IPv4: addrString(a.HostOnly4), IPv6: addrString(a.HostOnly6),
		NATIPv4: addrString(a.NAT4), NATIPv6: addrString(a.NAT6), HostNetwork: n.HostNetwork,
	}
	for _, p := range []struct {
		dst           *string
		local, custom netip.Prefix
	}{{&out.IPv4, n.LocalAddress, n.IP}, {&out.IPv6, n.LocalAddress6, n.IP6}} {
		switch {
		case *p.dst != "":
		case p.local.IsValid():
			*p.dst = p.local.Addr().String()
		case p.custom.IsValid() && n.Bridge != "": // a bridge of the host's own
			*p.dst = p.custom.Addr().String()
		}
	}
	return out
}

// NetworkStatus reports the instance's bridges and tables as the kernel has
// them, and how many containers hold addresses and run.
type NetworkStatus struct {
	network.Status
	Containers int `json:"containers"` // holding addresses
	Active     int `json:"active"`     // with their network set up
}

// NetworkStatus inspects the instance's network.
func (m *Manager) NetworkStatus() (NetworkStatus, error) {
	st, err := m.Net.Load()
	if err != nil {
		return NetworkStatus{}, err
	}
	runs, err := m.Store.LoadRuns()
	if err != nil {
		return NetworkStatus{}, err
	}
	return NetworkStatus{Status: network.ReadStatus(st.Settings, m.host.Uplink), Containers: len(st.Addresses), Active: len(members(runs))}, nil
}

// dnsLock is held by the instance's name server while it runs.
func (m *Manager) dnsLock() string { return m.Store.NameServerLockPath() }

// tidyRun removes the instance's run directory once no container of it
// exists and nothing is left there, so that nothing of a destroyed
// instance stays in /run. Errors are warnings: nothing depends on it.
func (m *Manager) tidyRun(ctx context.Context) {
	if names, err := m.Store.Names(); err != nil || len(names) > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	lock, err := lockfile.Lock(ctx, m.Store.GlobalLockPath())
	if err != nil {
		m.warnf("removing the run directory %s: %v", m.Store.Run, err)
		return
	}
	defer lock.Unlock()
	// A create may have made a container meanwhile; it makes nothing in the
	// run directory without the global lock.
	if names, err := m.Store.Names(); err != nil || len(names) > 0 {
		return
	}
	if err := m.Store.RemoveRunIfEmpty(); err != nil {
		m.warnf("removing the run directory %s: %v", m.Store.Run, err)
	}
	if runs, err := m.Store.LoadRuns(); err == nil {
		m.removeCgroupParent(runs)
	}
}

// ensureDNS starts the instance's name server unless it runs: a detached
// process of this binary (see network.NameServer), which ends by itself
// when no container runs. The table it serves is written before (by
// netStart).
func (m *Manager) ensureDNS() error {
	lock, err := lockfile.TryLock(m.dnsLock())
	if errors.Is(err, lockfile.ErrLocked) {
		return nil // it runs
	}
	if err != nil {
		return err
	}
	_ = lock.Unlock()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ns := network.NameServer{Table: m.Store.NameServerTablePath(), Lock: m.dnsLock(), GlobalLock: m.Store.GlobalLockPath()}
	if systemd.Host() {
		// A unit of its own: started from a container's unit, it would
		// otherwise live in that unit's cgroup and go when it stops.
		// systemd-run returns once the unit runs; a unit of that name
		// running already is the name server another command started.
		_, prefix := systemd.Slice(m.Store.CgroupParent)
		args := append([]string{"--quiet", "--collect", "--unit=" + prefix + "-names",
			"--description=nixcell's name server for " + m.Store.Root, "--slice=" + prefix + ".slice",
			"--setenv=" + network.NameServerEnv, exe}, ns.Args()...)
		_ = exec.Command("systemd-run", args...).Run()
		return nil
	}
	cmd := exec.Command(exe, ns.Args()...)
	cmd.Args[0] = "nixcell" // as ps shows it
	cmd.Env = []string{network.NameServerEnv}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the name server: %w", err)
	}
	return cmd.Process.Release()
}
