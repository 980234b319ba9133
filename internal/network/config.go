package network

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
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

// check refuses settings of a kind NewSettings never makes, so that a
// damaged or hand-edited state file stops the command that reads it
// instead of making it panic (an IPv6 subnet where an IPv4 one belongs)
// or write into the host's firewall script (the table's name is part of
// it).
func (s Settings) check() error {
	for _, p := range []struct {
		what   string
		subnet netip.Prefix
	}{{"the host-only subnet", s.HostOnly}, {"the NAT subnet", s.NAT}} {
		if !p.subnet.Addr().Is4() || p.subnet.Bits() > 30 {
			return fmt.Errorf("%w: %s %s is not an IPv4 subnet of /30 or larger", ErrBadConfig, p.what, p.subnet)
		}
	}
	if s.HostOnly.Overlaps(s.NAT) {
		return fmt.Errorf("%w: the host-only subnet %s and the NAT subnet %s overlap", ErrBadConfig, s.HostOnly, s.NAT)
	}
	if !s.ULA.Addr().Is6() || s.ULA.Bits() != 48 {
		return fmt.Errorf("%w: the ULA prefix %s is not an IPv6 /48", ErrBadConfig, s.ULA)
	}
	if s.NAT6.IsValid() && (!s.NAT6.Addr().Is6() || s.NAT6.Bits() != 64) {
		return fmt.Errorf("%w: the NAT IPv6 prefix %s is not an IPv6 /64", ErrBadConfig, s.NAT6)
	}
	for _, n := range []struct {
		what, name string
		max        int // an interface's name has 15 bytes (IFNAMSIZ); nft allows 255
	}{{"bridge", s.BridgeHostOnly, 15}, {"bridge", s.BridgeNAT, 15}, {"table", s.Table, 255}} {
		if n.name == "" || len(n.name) > n.max || strings.Trim(n.name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return fmt.Errorf("%w: the %s name %q is not 1-%d of a-z, 0-9 and '-'", ErrBadConfig, n.what, n.name, n.max)
		}
	}
	return nil
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
