package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/spec"
)

var testConfig = Config{
	HostOnly: netip.MustParsePrefix("10.50.0.0/29"),
	NAT:      netip.MustParsePrefix("10.60.0.0/24"),
	ULA:      netip.MustParsePrefix("fd12:3456:789a::/48"),
}

func testSettings(t *testing.T) Settings {
	t.Helper()
	s, err := NewSettings("abc", testConfig)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// desiredFor plans the given containers (name to network settings) as
// running, with addresses allocated in order of name.
func desiredFor(t *testing.T, s Settings, uplink string, nets map[string]spec.Network) Desired {
	t.Helper()
	st := State{Settings: s, Addresses: map[string]Addresses{}}
	var members []Member
	for _, name := range sortedNames(nets) {
		a, err := s.Allocate(name, nets[name], Addresses{}, st.Addresses)
		if err != nil {
			t.Fatal(err)
		}
		st.Addresses[name] = a
		members = append(members, Member{Name: name, Network: nets[name]})
	}
	return st.Desired(members, Host{Uplink: uplink})
}

func TestNewSettings(t *testing.T) {
	s := testSettings(t)
	if s.BridgeHostOnly != "nch-abc" || s.Table != "nixcell-abc" || s.HostOnly.String() != "10.50.0.0/29" {
		t.Errorf("settings %+v", s)
	}
	h, n := s.Bridges()
	if h.IPv4.String() != "10.50.0.1/29" || h.IPv6.String() != "fd12:3456:789a:1::1/64" || n.IPv6.String() != "fd12:3456:789a:2::1/64" || !n.NAT {
		t.Errorf("bridges %+v %+v", h, n)
	}
	bad := testConfig
	bad.NAT = netip.MustParsePrefix("10.50.0.0/24")
	if _, err := NewSettings("", bad); err == nil || !strings.Contains(err.Error(), "overlap") || !errors.Is(err, fault.Invalid) {
		t.Errorf("overlapping subnets: %v", err)
	}
	bad.NAT = netip.MustParsePrefix("fd00::/64")
	if _, err := NewSettings("", bad); err == nil {
		t.Error("IPv6 NAT subnet accepted")
	}
	d, err := NewSettings("", Config{})
	if err != nil || d.HostOnly.String() != "10.101.0.0/16" || d.BridgeHostOnly != "nc-hostonly" || d.Table != "nixcell" {
		t.Errorf("defaults %+v, %v", d, err)
	}
	if b := d.ULA.Addr().As16(); b[0] != 0xfd || d.ULA.Bits() != 48 {
		t.Errorf("random ULA %s", d.ULA)
	}
}

func TestIPv6Choices(t *testing.T) {
	s := testSettings(t)
	a, err := s.Allocate("v4only", spec.Network{NoIPv6: true, EnableNat: true}, Addresses{}, nil)
	if err != nil || a.HostOnly6.IsValid() || a.NAT6.IsValid() || !a.NAT4.IsValid() {
		t.Errorf("enableIPv6 = false: %+v, %v", a, err)
	}
	p := s.PlanFor("v4only", spec.Network{NoIPv6: true, EnableNat: true}, a)
	if len(p.Interfaces[0].Addrs) != 1 || p.Interfaces[1].Gateway6.IsValid() {
		t.Errorf("plan without IPv6: %+v", p)
	}
	if h := s.PlanFor("v4only", spec.Network{NoIPv6: true}, Addresses{HostOnly4: a.HostOnly4}); !h.Interfaces[0].Gateway4.IsValid() || h.Interfaces[0].Gateway6.IsValid() {
		t.Errorf("host-only plan without IPv6: %+v", h)
	}

	routed := testConfig
	routed.NAT6 = netip.MustParsePrefix("2001:db8:1:2::/64")
	r, err := NewSettings("x", routed)
	if err != nil {
		t.Fatal(err)
	}
	if _, nat := r.Bridges(); nat.IPv6.String() != "2001:db8:1:2::1/64" {
		t.Errorf("NAT bridge with a routable prefix: %s", nat.IPv6)
	}
	b, _ := r.Allocate("routed", spec.Network{EnableNat: true}, Addresses{}, nil)
	if b.NAT6.String() != "2001:db8:1:2::2" {
		t.Errorf("routable NAT address %s", b.NAT6)
	}
	rules := Desired{Settings: r, Containers: []Planned{{Name: "routed", Plan: r.PlanFor("routed", spec.Network{EnableNat: true}, b), Addresses: b, Network: spec.Network{EnableNat: true}}}}.Render()
	if strings.Contains(rules, "ip6 saddr") {
		t.Errorf("a routable prefix is masqueraded:\n%s", rules)
	}
	routed.NAT6 = netip.MustParsePrefix("2001:db8::/48")
	if _, err := NewSettings("x", routed); err == nil {
		t.Error("a /48 NAT IPv6 prefix was accepted")
	}
}
