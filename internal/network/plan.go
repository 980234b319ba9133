// Package network owns the host side of container networking: the managed
// bridges, the address allocation (IPv4 and IPv6, stable for a container's
// life), the veth interfaces configured from the host before a container's
// init runs, and nixcell's own nftables tables (NAT, port forwards,
// isolation). It converges: Sync renders the whole ruleset from the desired
// state and replaces nixcell's tables in one nft transaction, so every add
// has its delete and nothing outside those tables is touched.
//
// Pure planning (settings, allocation, interface plans, rule rendering) is
// in the files without _linux; netlink and nft calls are in *_linux.go.
package network

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"

	"github.com/nixcell/nixcell/internal/fault"

	"github.com/nixcell/nixcell/internal/spec"
)

// Config is how the administrator shapes an instance's network. It is read
// when the instance's network state is first created (later changes need a
// new instance) and comes from the caller: nixcell's command line takes it
// from NIXCELL_* variables, the NixOS module from its options. A zero field
// takes the default.
type Config struct {
	// HostOnly is the host-only bridge's IPv4 subnet (default 10.101.0.0/16,
	// as nixcloud-container's).
	HostOnly netip.Prefix
	// NAT is the NAT bridge's IPv4 subnet (default 10.102.0.0/16).
	NAT netip.Prefix
	// ULA is the host's unique local IPv6 prefix, /48 (default: random).
	ULA netip.Prefix
	// NAT6 is a routable /64 for the NAT bridge instead of the ULA's.
	NAT6 netip.Prefix
}

// Settings are an instance's network settings, fixed when its network
// state is first created (see Config) and stored with the allocations.
type Settings struct {
	// HostOnly is the host-only bridge's IPv4 subnet; the bridge has its
	// first address. Default 10.101.0.0/16, as nixcloud-container.
	HostOnly netip.Prefix `json:"hostOnly"`
	// NAT is the NAT bridge's IPv4 subnet. Default 10.102.0.0/16.
	NAT netip.Prefix `json:"nat"`
	// ULA is a random /48 unique local prefix (RFC 4193) of this host: the
	// host-only bridge uses its subnet 1, the NAT bridge its subnet 2.
	ULA netip.Prefix `json:"ula"`
	// NAT6, when set, is a routable /64 for the NAT bridge instead of the
	// ULA subnet: its containers' IPv6 traffic is routed, not
	// masqueraded. The host's uplink must route it here.
	NAT6 netip.Prefix `json:"nat6,omitzero"`
	// BridgeHostOnly and BridgeNAT are the bridge interface names.
	BridgeHostOnly string `json:"bridgeHostOnly"`
	BridgeNAT      string `json:"bridgeNat"`
	// Table is the name of nixcell's nftables tables.
	Table string `json:"table"`
}

// NewSettings chooses an instance's settings from cfg. id is "" for the
// default instance, else a short identifier that keeps names of isolated
// instances (tests) apart.
func NewSettings(id string, cfg Config) (Settings, error) {
	s := Settings{BridgeHostOnly: "nc-hostonly", BridgeNAT: "nc-internet", Table: "nixcell"}
	if id != "" {
		s.BridgeHostOnly, s.BridgeNAT, s.Table = "nch-"+id, "ncn-"+id, "nixcell-"+id
	}
	var err error
	if s.HostOnly, err = subnet4(cfg.HostOnly, "10.101.0.0/16", "the host-only subnet"); err != nil {
		return s, err
	}
	if s.NAT, err = subnet4(cfg.NAT, "10.102.0.0/16", "the NAT subnet"); err != nil {
		return s, err
	}
	if s.HostOnly.Overlaps(s.NAT) {
		return s, fmt.Errorf("%w: the host-only subnet %s and the NAT subnet %s overlap", ErrBadConfig, s.HostOnly, s.NAT)
	}
	if p := cfg.NAT6; p.IsValid() {
		if !p.Addr().Is6() || p.Bits() != 64 {
			return s, fmt.Errorf("%w: the NAT IPv6 prefix %s is not an IPv6 /64", ErrBadConfig, p)
		}
		s.NAT6 = p.Masked()
	}
	if p := cfg.ULA; p.IsValid() {
		if !p.Addr().Is6() || p.Bits() > 48 {
			return s, fmt.Errorf("%w: the ULA prefix %s is not an IPv6 prefix of length 48 or shorter", ErrBadConfig, p)
		}
		s.ULA = netip.PrefixFrom(p.Masked().Addr(), 48)
	} else {
		// RFC 4193: fd00::/8 plus 40 random bits.
		var b [16]byte
		b[0] = 0xfd
		if _, err := rand.Read(b[1:6]); err != nil {
			return s, err
		}
		s.ULA = netip.PrefixFrom(netip.AddrFrom16(b), 48)
	}
	return s, nil
}

// ErrBadConfig is the class of unusable network configurations.
var ErrBadConfig = fault.New(fault.Invalid, "invalid network configuration")

func subnet4(p netip.Prefix, def, what string) (netip.Prefix, error) {
	if !p.IsValid() {
		p = netip.MustParsePrefix(def)
	}
	if !p.Addr().Is4() || p.Bits() > 30 {
		return p, fmt.Errorf("%w: %s %s is not an IPv4 subnet of /30 or larger", ErrBadConfig, what, p)
	}
	return p.Masked(), nil
}

// natSubnet6 is the NAT bridge's IPv6 subnet.
func (s Settings) natSubnet6() netip.Prefix {
	if s.NAT6.IsValid() {
		return s.NAT6
	}
	return s.ula64(2)
}

// ula64 is subnet n of the host's ULA /48.
func (s Settings) ula64(n byte) netip.Prefix {
	b := s.ULA.Addr().As16()
	b[7] = n
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// Bridge describes one managed bridge.
type Bridge struct {
	Name       string
	IPv4, IPv6 netip.Prefix // the bridge's own addresses, with the subnet's length
	NAT        bool         // masqueraded out of the uplink
}

// Bridges are the instance's two managed bridges.
func (s Settings) Bridges() (hostOnly, nat Bridge) {
	gw := func(p netip.Prefix) netip.Prefix { return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits()) }
	return Bridge{Name: s.BridgeHostOnly, IPv4: gw(s.HostOnly), IPv6: gw(s.ula64(1))},
		Bridge{Name: s.BridgeNAT, IPv4: gw(s.NAT), IPv6: gw(s.natSubnet6()), NAT: true}
}

// Addresses are a container's allocated addresses. Zero means none.
type Addresses struct {
	HostOnly4 netip.Addr `json:"hostOnly4,omitzero"`
	HostOnly6 netip.Addr `json:"hostOnly6,omitzero"`
	NAT4      netip.Addr `json:"nat4,omitzero"`
	NAT6      netip.Addr `json:"nat6,omitzero"`
}

func (a Addresses) all() []netip.Addr {
	var out []netip.Addr
	for _, x := range []netip.Addr{a.HostOnly4, a.HostOnly6, a.NAT4, a.NAT6} {
		if x.IsValid() {
			out = append(out, x)
		}
	}
	return out
}

// ErrAddressInUse means a fixed address is held by another container.
var ErrAddressInUse = fault.New(fault.Conflict, "address in use")

// ErrExhausted means a subnet has no free address.
var ErrExhausted = fault.New(fault.Exhausted, "no free address")

// Allocate returns the addresses a container with network settings n
// needs, keeping those it already holds (held) so they stay stable for its
// life. taken are the addresses of every other container. Fixed addresses
// (network.ip, network.ip6) must lie in the bridge's subnet and be free.
func (s Settings) Allocate(name string, n spec.Network, held Addresses, taken map[string]Addresses) (Addresses, error) {
	var out Addresses
	if n.HostNetwork || n.HostAddress.IsValid() || n.HostAddress6.IsValid() {
		return out, nil // these modes use no managed bridge
	}
	if s.customBridge(n) {
		// A bridge of the host's own: its subnet is not nixcell's to
		// allocate from, so network.ip says the address.
		if !n.IP.IsValid() || n.IP.Bits() == 32 {
			return out, fmt.Errorf("network.bridge %s is not one of nixcell's bridges: set network.ip with its prefix length (e.g. \"192.168.1.50/24\")", n.Bridge)
		}
		return out, nil
	}
	used := map[netip.Addr]string{}
	for other, a := range taken {
		if other == name {
			continue
		}
		for _, x := range a.all() {
			used[x] = other
		}
	}
	hostOnly, nat := s.Bridges()
	pick := func(subnet netip.Prefix, gateway netip.Addr, fixed netip.Prefix, keep netip.Addr, what string) (netip.Addr, error) {
		if fixed.IsValid() {
			a := fixed.Addr()
			if !subnet.Contains(a) || a == gateway || a == subnet.Masked().Addr() || a == lastAddr(subnet) {
				return a, fmt.Errorf("%s %s is not a usable address of the bridge's subnet %s", what, a, subnet)
			}
			if owner, ok := used[a]; ok {
				return a, fmt.Errorf("%w: %s %s is held by container %q", ErrAddressInUse, what, a, owner)
			}
			return a, nil
		}
		if keep.IsValid() && subnet.Contains(keep) {
			if _, ok := used[keep]; !ok {
				return keep, nil
			}
		}
		for a := gateway.Next(); subnet.Contains(a) && a != lastAddr(subnet); a = a.Next() {
			if _, ok := used[a]; !ok {
				return a, nil
			}
		}
		return netip.Addr{}, fmt.Errorf("%w in %s for %s", ErrExhausted, subnet, what)
	}
	var err error
	if out.HostOnly4, err = pick(s.HostOnly, hostOnly.IPv4.Addr(), n.IP, held.HostOnly4, "network.ip"); err != nil {
		return out, err
	}
	// IPv6 mirrors the IPv4 host part, so both addresses of a container
	// are easy to tell apart and stay stable together.
	if !n.NoIPv6 {
		if out.HostOnly6, err = pick(s.ula64(1), hostOnly.IPv6.Addr(), n.IP6, mirror(s.ula64(1), s.HostOnly, out.HostOnly4), "network.ip6"); err != nil {
			return out, err
		}
	}
	if n.EnableNat {
		if out.NAT4, err = pick(s.NAT, nat.IPv4.Addr(), netip.Prefix{}, held.NAT4, "the NAT interface's address"); err != nil {
			return out, err
		}
		if !n.NoIPv6 {
			if out.NAT6, err = pick(s.natSubnet6(), nat.IPv6.Addr(), netip.Prefix{}, mirror(s.natSubnet6(), s.NAT, out.NAT4), "the NAT interface's IPv6 address"); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// mirror maps an IPv4 address's offset in v4 to the same offset in v6.
func mirror(v6, v4 netip.Prefix, a netip.Addr) netip.Addr {
	if !a.IsValid() {
		return a
	}
	base, x := v4.Masked().Addr().As4(), a.As4()
	off := uint32(x[0]-base[0])<<24 | uint32(x[1]-base[1])<<16 | uint32(x[2]-base[2])<<8 | uint32(x[3]-base[3])
	b := v6.Masked().Addr().As16()
	b[12], b[13], b[14], b[15] = byte(off>>24), byte(off>>16), byte(off>>8), byte(off)
	return netip.AddrFrom16(b)
}

func lastAddr(p netip.Prefix) netip.Addr {
	if p.Addr().Is6() {
		return netip.Addr{} // no broadcast address
	}
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

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
	p := Plan{Interfaces: []Interface{eth0}, Macvlans: n.Macvlans}
	if n.EnableNat {
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

// sortedNames returns the keys of m in order, for deterministic output.
func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
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
