package cell

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/runtime"
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

// releaseAddresses frees the container's addresses.
func (m *Manager) releaseAddresses(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return m.Net.Update(ctx, func(st *network.State) error {
		delete(st.Addresses, name)
		delete(st.Ports, name)
		return nil
	})
}

// prepareNetwork makes the host ready for the container to start: its
// addresses, the bridges, and the rules with its forwards. It returns the
// plan of its interfaces for the runtime's BeforeInit.
func (m *Manager) prepareNetwork(ctx context.Context, rec *state.Container) (network.Plan, error) {
	var plan network.Plan
	err := m.Net.Update(ctx, func(st *network.State) error {
		a, err := st.Settings.Allocate(rec.Name, rec.Spec.Network, st.Addresses[rec.Name], st.Addresses)
		if err != nil {
			return err
		}
		st.Addresses[rec.Name] = a
		plan = st.Settings.PlanFor(rec.Name, rec.Spec.Network, a)
		d, err := m.desired(st, rec)
		if err != nil {
			return err
		}
		return network.Sync(d)
	})
	if err != nil {
		return plan, fmt.Errorf("network: %w", err)
	}
	return plan, nil
}

// syncNetwork converges the host's network to the running containers, after
// one stopped or failed to start. Its interfaces are removed first.
func (m *Manager) syncNetwork(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := m.Net.Update(ctx, func(st *network.State) error {
		if rec, err := m.Store.Load(name); err == nil {
			_ = network.Detach(st.Settings.PlanFor(name, rec.Spec.Network, st.Addresses[name]))
		}
		d, err := m.desired(st, nil)
		if err != nil {
			return err
		}
		return network.Sync(d)
	})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// desired collects the network of every running container, plus starting
// (which is about to run). Preconditions: the global lock is held.
func (m *Manager) desired(st *network.State, starting *state.Container) (network.Desired, error) {
	d := network.Desired{Settings: st.Settings, Uplink: network.DefaultUplink()}
	names, err := m.Store.Names()
	if err != nil {
		return d, err
	}
	for _, n := range names {
		rec := starting
		if starting == nil || n != starting.Name {
			status, err := runtime.Inspect(m.Store.RuntimeRoot(), n)
			if err != nil || !status.Running {
				continue
			}
			if rec, err = m.Store.Load(n); err != nil {
				if errors.Is(err, state.ErrNotFound) {
					continue
				}
				return d, err
			}
		}
		a := st.Addresses[n]
		d.Containers = append(d.Containers, network.Running{
			Name: n, Plan: st.Settings.PlanFor(n, rec.Spec.Network, a), Addresses: a, Network: rec.Spec.Network,
		})
	}
	return d, nil
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
	if n.LocalAddress.IsValid() {
		out.IPv4 = n.LocalAddress.Addr().String()
	}
	if n.LocalAddress6.IsValid() {
		out.IPv6 = n.LocalAddress6.Addr().String()
	}
	return out
}
