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

func TestAllocate(t *testing.T) {
	s := testSettings(t) // host-only 10.50.0.0/29: .2 to .6 usable
	taken := map[string]Addresses{}
	alloc := func(name string, n spec.Network) (Addresses, error) {
		a, err := s.Allocate(name, n, taken[name], taken)
		if err == nil {
			taken[name] = a
		}
		return a, err
	}
	a, err := alloc("a", spec.Network{EnableNat: true})
	if err != nil || a.HostOnly4.String() != "10.50.0.2" || a.HostOnly6.String() != "fd12:3456:789a:1::2" ||
		a.NAT4.String() != "10.60.0.2" || a.NAT6.String() != "fd12:3456:789a:2::2" {
		t.Fatalf("a: %+v, %v", a, err)
	}
	// Stable: allocating again keeps the addresses.
	if again, err := alloc("a", spec.Network{EnableNat: true}); err != nil || again != a {
		t.Errorf("a again: %+v, %v", again, err)
	}
	fixed := netip.MustParsePrefix("10.50.0.5/32")
	if b, err := alloc("b", spec.Network{IP: fixed}); err != nil || b.HostOnly4 != fixed.Addr() || b.HostOnly6.String() != "fd12:3456:789a:1::5" {
		t.Errorf("b: %+v, %v", b, err)
	}
	if _, err := alloc("c", spec.Network{IP: fixed}); !errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), `held by container "b"`) {
		t.Errorf("collision: %v", err)
	}
	for _, bad := range []string{"10.50.0.1/32", "10.50.0.7/32", "10.50.0.0/32", "10.99.0.2/32"} {
		if _, err := alloc("c", spec.Network{IP: netip.MustParsePrefix(bad)}); err == nil || !strings.Contains(err.Error(), "not a usable address") {
			t.Errorf("fixed %s: %v", bad, err)
		}
	}
	for _, n := range []string{"c", "d", "e"} {
		if _, err := alloc(n, spec.Network{}); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	if _, err := alloc("f", spec.Network{}); !errors.Is(err, ErrExhausted) {
		t.Errorf("exhaustion: %v", err)
	}
	delete(taken, "c")
	if g, err := alloc("g", spec.Network{}); err != nil || g.HostOnly4.String() != "10.50.0.3" {
		t.Errorf("reuse after release: %+v, %v", g, err)
	}
	// Private veth and host network use no bridge address.
	for _, n := range []spec.Network{{HostNetwork: true}, {HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32")}} {
		if a, err := s.Allocate("h", n, Addresses{}, taken); err != nil || a != (Addresses{}) {
			t.Errorf("%+v: %+v, %v", n, a, err)
		}
	}
}

func TestPlanFor(t *testing.T) {
	s := testSettings(t)
	a := Addresses{HostOnly4: netip.MustParseAddr("10.50.0.2"), HostOnly6: netip.MustParseAddr("fd12:3456:789a:1::2"),
		NAT4: netip.MustParseAddr("10.60.0.2"), NAT6: netip.MustParseAddr("fd12:3456:789a:2::2")}
	p := s.PlanFor("web", spec.Network{EnableNat: true}, a)
	if len(p.Interfaces) != 2 || p.Interfaces[0].Name != "eth0" || p.Interfaces[0].Bridge != "nch-abc" ||
		p.Interfaces[0].Gateway4.IsValid() || p.Interfaces[1].Name != "internet" || p.Interfaces[1].Gateway4.String() != "10.60.0.1" ||
		p.Interfaces[0].Addrs[0].String() != "10.50.0.2/29" || len(p.Interfaces[0].HostName) > 15 {
		t.Errorf("plan %+v", p)
	}
	if HostIfName("t", "web", "eth0") == HostIfName("t2", "web", "eth0") {
		t.Error("host interface names of two instances collide")
	}
	v := s.PlanFor("web", spec.Network{HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32")}, Addresses{})
	if len(v.Interfaces) != 1 || v.Interfaces[0].Bridge != "" || v.Interfaces[0].Gateway4.String() != "10.9.0.1" {
		t.Errorf("veth plan %+v", v)
	}
}

func TestRender(t *testing.T) {
	s := testSettings(t)
	if got := (Desired{Settings: s}).Render(); got != "" {
		t.Errorf("no containers: %q", got)
	}
	a := Addresses{HostOnly4: netip.MustParseAddr("10.50.0.2"), HostOnly6: netip.MustParseAddr("fd12:3456:789a:1::2")}
	n := spec.Network{AllowPeers: true, ForwardPorts: []spec.PortForward{
		{Protocol: "tcp", HostPort: 8080, ContainerPort: 80},
		{Protocol: "udp", HostPort: 53, ContainerPort: 53, HostAddress: netip.MustParseAddr("192.0.2.1")},
	}}
	d := Desired{Settings: s, Uplink: "eth9", Containers: []Planned{{Name: "web", Plan: s.PlanFor("web", n, a), Addresses: a, Network: n}}}
	got := d.Render()
	for _, want := range []string{
		"table inet nixcell-abc {",
		`fib daddr type local tcp dport 8080 dnat ip to 10.50.0.2:80 comment "web"`,
		`fib daddr type local tcp dport 8080 dnat ip6 to [fd12:3456:789a:1::2]:80 comment "web"`,
		`ip daddr 192.0.2.1 udp dport 53 dnat ip to 10.50.0.2:53 comment "web"`,
		`ip saddr 127.0.0.0/8 ct status dnat masquerade`,
		`iifname "nch-abc" drop`,
		"table bridge nixcell-abc {",
		`comment "allowPeers on both"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "dnat ip6 to [fd12:3456:789a:1::2]:53") {
		t.Errorf("an IPv4-only forward got an IPv6 rule:\n%s", got)
	}
	if strings.Contains(got, "masquerade comment \"NAT bridge\"") {
		t.Errorf("NAT rules without a NAT container:\n%s", got)
	}
}

func TestClaimPorts(t *testing.T) {
	st := State{}
	web := []spec.PortForward{{Protocol: "tcp", HostPort: 80}}
	if err := st.ClaimPorts("web", web); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ports []spec.PortForward
		ok    bool
	}{
		{[]spec.PortForward{{Protocol: "tcp", HostPort: 80}}, false},
		{[]spec.PortForward{{Protocol: "tcp", HostPort: 80, HostAddress: netip.MustParseAddr("127.0.0.1")}}, false},
		{[]spec.PortForward{{Protocol: "udp", HostPort: 80}}, true},
		{[]spec.PortForward{{Protocol: "tcp", HostPort: 81}}, true},
	} {
		err := st.ClaimPorts("other", c.ports)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrPortInUse) {
			t.Errorf("%+v: %v", c.ports, err)
		}
	}
	if err := st.ClaimPorts("web", web); err != nil {
		t.Errorf("a container's own ports conflict with themselves: %v", err)
	}
}

func TestReplaceBlock(t *testing.T) {
	orig := "127.0.0.1 localhost\n::1 localhost\n"
	with := replaceBlock([]byte(orig), "nixcell", []string{"10.0.0.2\tweb"})
	want := orig + "# begin nixcell (managed by nixcell)\n10.0.0.2\tweb\n# end nixcell\n"
	if string(with) != want {
		t.Errorf("added:\n%s\nwant:\n%s", with, want)
	}
	other := replaceBlock(with, "nixcell-x", []string{"10.9.0.2\tdb"})
	replaced := replaceBlock(other, "nixcell", []string{"10.0.0.3\tapp"})
	if !strings.Contains(string(replaced), "10.0.0.3\tapp") || strings.Contains(string(replaced), "web") || !strings.Contains(string(replaced), "10.9.0.2\tdb") {
		t.Errorf("replaced:\n%s", replaced)
	}
	back := replaceBlock(replaceBlock(replaced, "nixcell", nil), "nixcell-x", nil)
	if string(back) != orig {
		t.Errorf("removing the blocks gave:\n%q\nwant\n%q", back, orig)
	}
	if got := replaceBlock([]byte("no newline"), "t", []string{"a b"}); !strings.HasPrefix(string(got), "no newline\n# begin t") {
		t.Errorf("no final newline: %q", got)
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
