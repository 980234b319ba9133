package network

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/nixcell/nixcell/internal/spec"
)

// Member is a container whose network must be on the host, because it
// runs or is starting, with the network settings it started with. Which
// containers these are is the run table's to say (state.Runs), not this
// package's.
type Member struct {
	Name    string
	Network spec.Network
}

// Host is what Apply needs to know of the host besides the state.
type Host struct {
	// Uplink is the interface NAT traffic leaves by; "" finds the
	// interface of the default route.
	Uplink string
	// HostsFile is where container names are published; "" is /etc/hosts.
	HostsFile string
}

// Planned is a member's network as the host must carry it.
type Planned struct {
	Name      string
	Plan      Plan
	Addresses Addresses
	Network   spec.Network
}

// Desired is the state Apply converges to: what the host must carry for
// the members to run.
type Desired struct {
	Settings Settings
	// Uplink is the interface NAT traffic leaves by ("" = the default
	// route's).
	Uplink string
	// HostsFile is where the containers' names are published.
	HostsFile string
	// Containers are the running and starting ones, by name.
	Containers []Planned
	// KeepHostOnly and KeepNAT keep a bridge (and its rules) while a
	// container that uses it exists, running or not, so restarts do not
	// rebuild it.
	KeepHostOnly, KeepNAT bool
}

// Desired computes what the host must carry for members to run, with the
// addresses they hold; host fills in the host's particulars.
func (st *State) Desired(members []Member, host Host) Desired {
	d := Desired{Settings: st.Settings, Uplink: host.Uplink, HostsFile: host.HostsFile}
	if d.HostsFile == "" {
		d.HostsFile = "/etc/hosts"
	}
	for _, a := range st.Addresses {
		d.KeepHostOnly = d.KeepHostOnly || a.HostOnly4.IsValid()
		d.KeepNAT = d.KeepNAT || a.NAT4.IsValid()
	}
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range members {
		a := st.Addresses[m.Name]
		d.Containers = append(d.Containers, Planned{Name: m.Name, Plan: st.Settings.PlanFor(m.Name, m.Network, a), Addresses: a, Network: m.Network})
	}
	return d
}

// bridgesInUse says which managed bridges must exist.
func (d Desired) bridgesInUse() (hostOnly, nat bool) {
	h, n := d.Settings.Bridges()
	hostOnly, nat = d.KeepHostOnly, d.KeepNAT
	for _, c := range d.Containers {
		for _, i := range c.Plan.Interfaces {
			hostOnly = hostOnly || i.Bridge == h.Name
			nat = nat || i.Bridge == n.Name
		}
	}
	return hostOnly, nat
}

// needsForwarding tells whether the host must route for the containers:
// for the NAT bridge, for forwarded ports, or for a private veth.
func (d Desired) needsForwarding() bool {
	if _, nat := d.bridgesInUse(); nat {
		return true
	}
	for _, c := range d.Containers {
		if len(c.Network.ForwardPorts) > 0 || len(c.Plan.Interfaces) > 0 && c.Plan.Interfaces[0].Bridge == "" {
			return true
		}
	}
	return false
}

// forwardTarget is where a container's forwarded ports go: its host-only
// address, or its private veth address.
func (c Planned) forwardTarget(v6 bool) netip.Addr {
	a, local, fixed := c.Addresses.HostOnly4, c.Network.LocalAddress, c.Network.IP
	if v6 {
		a, local, fixed = c.Addresses.HostOnly6, c.Network.LocalAddress6, c.Network.IP6
	}
	switch {
	case a.IsValid():
		return a
	case local.IsValid():
		return local.Addr()
	}
	return fixed.Addr() // on a bridge of the host's own
}
