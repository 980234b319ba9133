package network

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"

	"github.com/nixcell/nixcell/internal/spec"
)

// Interface is one interface of a container: a veth pair whose host end
// (HostName) is on a bridge or alone (private veth), and whose other end is
// moved into the container and named Name.
type Interface struct {
	Name     string // inside, e.g. "eth0"
	HostName string // on the host
	Bridge   string // "" for a private veth
	// Addresses inside, and the host end's addresses for a private veth.
	Addrs     []netip.Prefix
	HostAddrs []netip.Prefix
	// Gateways for the default routes inside (zero: none).
	Gateway4, Gateway6 netip.Addr
}

// customBridge tells whether n attaches to a bridge of the host's own.
func (s Settings) customBridge(n spec.Network) bool {
	return n.Bridge != "" && n.Bridge != s.BridgeHostOnly
}

// The names of a container's interfaces inside: the bridge's (or private
// veth's) and the NAT bridge's.
const (
	mainIface = "eth0"
	natIface  = "internet"
)

// Plan is what a container's network looks like when it runs.
type Plan struct {
	HostNetwork bool
	Interfaces  []Interface
	// Macvlans are host interfaces the container gets a macvlan of, named
	// mv-IFACE inside and left unconfigured for its own NixOS configuration,
	// as nixos-container's macvlans option does.
	Macvlans []string
}

// HostIfName is the host end's name of a container's interface: the
// instance's port prefix and a hash of the container and interface names,
// so it is stable, unique and at most 15 bytes.
func HostIfName(table, container, iface string) string {
	sum := sha256.Sum256([]byte(container + "/" + iface))
	return portPrefix(table) + hex.EncodeToString(sum[:4]) // 14 bytes
}

// portPrefix starts the names of every container interface of an
// instance, so one wildcard rule matches them all.
func portPrefix(table string) string {
	sum := sha256.Sum256([]byte(table))
	return "nc" + hex.EncodeToString(sum[:2])
}

// PlanFor plans a container's interfaces from its settings and addresses.
func (s Settings) PlanFor(name string, n spec.Network, a Addresses) Plan {
	if n.HostNetwork {
		return Plan{HostNetwork: true}
	}
	hostOnly, nat := s.Bridges()
	if s.customBridge(n) {
		return Plan{Interfaces: []Interface{{
			Name: mainIface, HostName: HostIfName(s.Table, name, mainIface), Bridge: n.Bridge,
			Addrs: validPrefixes(n.IP, n.IP6),
		}}, Macvlans: n.Macvlans}
	}
	if n.HostAddress.IsValid() || n.HostAddress6.IsValid() {
		i := Interface{Name: mainIface, HostName: HostIfName(s.Table, name, mainIface)}
		if n.HostAddress.IsValid() {
			i.HostAddrs = append(i.HostAddrs, n.HostAddress)
			i.Addrs = append(i.Addrs, n.LocalAddress)
			i.Gateway4 = n.HostAddress.Addr()
		}
		if n.HostAddress6.IsValid() {
			i.HostAddrs = append(i.HostAddrs, n.HostAddress6)
			i.Addrs = append(i.Addrs, n.LocalAddress6)
			i.Gateway6 = n.HostAddress6.Addr()
		}
		return Plan{Interfaces: []Interface{i}, Macvlans: n.Macvlans}
	}
	eth0 := Interface{
		Name: mainIface, HostName: HostIfName(s.Table, name, mainIface), Bridge: hostOnly.Name,
		Addrs: validPrefixes(netip.PrefixFrom(a.HostOnly4, s.HostOnly.Bits()), netip.PrefixFrom(a.HostOnly6, 64)),
	}
	if !n.EnableNat {
		// Replies to forwarded connections must reach their clients,
		// wherever those are, so the default routes lead to the host; the
		// firewall lets nothing of the container's own beyond it.
		if a.HostOnly4.IsValid() {
			eth0.Gateway4 = hostOnly.IPv4.Addr()
		}
		if a.HostOnly6.IsValid() {
			eth0.Gateway6 = hostOnly.IPv6.Addr()
		}
	}
	p := Plan{Interfaces: []Interface{eth0}, Macvlans: n.Macvlans}
	if n.EnableNat {
		// The default routes go out of the NAT bridge instead; replies to
		// forwarded connections take them too.
		p.Interfaces = append(p.Interfaces, Interface{
			Name: natIface, HostName: HostIfName(s.Table, name, natIface), Bridge: nat.Name,
			Addrs:    validPrefixes(netip.PrefixFrom(a.NAT4, s.NAT.Bits()), netip.PrefixFrom(a.NAT6, 64)),
			Gateway4: nat.IPv4.Addr(),
		})
		if a.NAT6.IsValid() {
			p.Interfaces[len(p.Interfaces)-1].Gateway6 = nat.IPv6.Addr()
		}
	}
	return p
}

func validPrefixes(ps ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}
