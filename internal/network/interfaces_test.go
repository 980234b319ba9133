package network

import (
	"net/netip"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

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
	// Host-only: the default routes lead to the host, for replies to
	// forwarded connections; the firewall keeps the rest in.
	h := s.PlanFor("web", spec.Network{}, Addresses{HostOnly4: a.HostOnly4, HostOnly6: a.HostOnly6})
	if len(h.Interfaces) != 1 || h.Interfaces[0].Gateway4.String() != "10.50.0.1" || h.Interfaces[0].Gateway6.String() != "fd12:3456:789a:1::1" {
		t.Errorf("host-only plan %+v", h)
	}
	if p.Interfaces[0].Gateway6.IsValid() || p.Interfaces[1].Gateway6.String() != "fd12:3456:789a:2::1" {
		t.Errorf("a NAT container's default routes are not all via the NAT bridge: %+v", p)
	}
	if HostIfName("t", "web", "eth0") == HostIfName("t2", "web", "eth0") {
		t.Error("host interface names of two instances collide")
	}
	v := s.PlanFor("web", spec.Network{HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32")}, Addresses{})
	if len(v.Interfaces) != 1 || v.Interfaces[0].Bridge != "" || v.Interfaces[0].Gateway4.String() != "10.9.0.1" {
		t.Errorf("veth plan %+v", v)
	}
}
