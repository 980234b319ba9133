package cell

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
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
// down the bridges no remaining container uses.
func (m *Manager) releaseAddresses(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return m.Net.Update(ctx, func(st *network.State) error {
		// Even a container stopped a moment ago may still have its
		// interfaces, until the kernel has removed its network namespace.
		_ = st.Settings.DetachContainer(name)
		delete(st.Addresses, name)
		delete(st.Ports, name)
		delete(st.Active, name)
		return st.Converge()
	})
}

// prepareNetwork makes the host ready for the container to start: its
// addresses, the bridges, and the rules with its forwards. It returns the
// plan of its interfaces for the runtime's BeforeInit.
func (m *Manager) prepareNetwork(ctx context.Context, rec *state.Container) (network.Plan, error) {
	// Until the new init is recorded, no record marks the container as
	// starting, which pruneActive respects.
	if err := m.Store.RemoveRunning(rec.Name); err != nil {
		return network.Plan{}, err
	}
	var plan network.Plan
	err := m.Net.Update(ctx, func(st *network.State) error {
		a, err := st.Settings.Allocate(rec.Name, rec.Spec.Network, st.Addresses[rec.Name], st.Addresses)
		if err != nil {
			return err
		}
		st.Addresses[rec.Name] = a
		plan = st.Settings.PlanFor(rec.Name, rec.Spec.Network, a)
		if st.Active == nil {
			st.Active = map[string]spec.Network{}
		}
		m.pruneActive(st)
		st.Active[rec.Name] = rec.Spec.Network
		return st.Converge()
	})
	if err != nil {
		return plan, fmt.Errorf("network: %w", err)
	}
	if len(plan.Interfaces) > 0 && plan.Interfaces[0].Bridge != "" {
		if err := m.ensureDNS(); err != nil {
			m.warnf("container names will not resolve in %s: %v", rec.Name, err)
		}
	}
	return plan, nil
}

// syncNetwork takes the container's network off the host after it stopped
// or failed to start: its rules and name go; with detach its interfaces
// are removed at once (otherwise the kernel removes them with its network
// namespace, a moment later).
func (m *Manager) syncNetwork(ctx context.Context, name string, detach bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := m.Net.Update(ctx, func(st *network.State) error {
		if detach {
			_ = st.Settings.DetachContainer(name)
		}
		delete(st.Active, name)
		m.pruneActive(st)
		return st.Converge()
	})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// pruneActive drops from the network state the containers whose init has
// died on its own since they started, so their rules, names and the name
// server go. Preconditions: the global lock is held.
func (m *Manager) pruneActive(st *network.State) {
	for name := range st.Active {
		r, ok, err := m.Store.LoadRunning(name)
		if err == nil && ok && runtime.Alive(r.InitPid, r.InitStartedAt) {
			continue
		}
		if err == nil && !ok {
			continue // starting right now: its record comes after its network
		}
		delete(st.Active, name)
	}
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
	return NetworkStatus{Status: network.ReadStatus(st.Settings), Containers: len(st.Addresses), Active: len(st.Active)}, nil
}

// dnsLock is held by the instance's name server while it runs.
func (m *Manager) dnsLock() string { return filepath.Join(m.Store.Run, "dns.lock") }

// ensureDNS starts the instance's name server unless it runs: a detached
// `nixcell network dns-serve`, which ends by itself when no container runs.
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
	cmd := exec.Command(exe, "--state-dir", m.Store.Root, "network", "dns-serve")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the name server: %w", err)
	}
	return cmd.Process.Release()
}

// ServeDNS runs the instance's name server until no container runs; a
// second one exits at once.
func (m *Manager) ServeDNS(ctx context.Context) error {
	lock, err := lockfile.TryLock(m.dnsLock())
	if errors.Is(err, lockfile.ErrLocked) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	return m.Net.ServeDNS(ctx)
}
