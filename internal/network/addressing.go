package network

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/spec"
)

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

// Host ports: a container claims the host ports it forwards at create
// and update, so no two containers forward the same one.

// ErrPortInUse means another container forwards the same host port.
var ErrPortInUse = fault.New(fault.Conflict, "host port already forwarded")

// ClaimPorts records the container's forwarded host ports, refusing any
// that another container forwards. Two forwards collide when protocol and
// port match and their host addresses are equal or either is "every
// address".
func (st *State) ClaimPorts(name string, ports []spec.PortForward) error {
	if err := CheckPorts(name, ports, st.Ports); err != nil {
		return err
	}
	if st.Ports == nil {
		st.Ports = map[string][]spec.PortForward{}
	}
	if len(ports) == 0 {
		delete(st.Ports, name)
	} else {
		st.Ports[name] = ports
	}
	return nil
}

// CheckPorts refuses forwards of the container name that collide with
// those claims holds for other containers. Two forwards collide when
// protocol and port match and their host addresses are equal or either is
// "every address".
func CheckPorts(name string, ports []spec.PortForward, claims map[string][]spec.PortForward) error {
	for _, other := range sortedNames(claims) {
		if other == name {
			continue
		}
		for _, f := range ports {
			for _, g := range claims[other] {
				if collide(f, g) {
					return fmt.Errorf("%w: %s port %d is forwarded to container %q", ErrPortInUse, f.Protocol, f.HostPort, other)
				}
			}
		}
	}
	return nil
}

// collide tells whether two forwards take the same host port: protocol and
// port match, and their host addresses are equal or either is "every
// address".
func collide(f, g spec.PortForward) bool {
	sameAddr := f.HostAddress == g.HostAddress || !f.HostAddress.IsValid() || !g.HostAddress.IsValid()
	return f.Protocol == g.Protocol && f.HostPort == g.HostPort && sameAddr
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
