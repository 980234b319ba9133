package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

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
