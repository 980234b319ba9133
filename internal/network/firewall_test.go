package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

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
		`iifname "nch-abc" reject with icmpx admin-prohibited comment "host-only: nothing out beyond the host"`,
		`oifname "nch-abc" drop comment "host-only: no route in"`,
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
