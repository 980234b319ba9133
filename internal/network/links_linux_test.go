package network

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/testutil"
)

// TestLinksBridge ensures a bridge with its addresses, repairs it after
// its addresses were deleted and it was set down, refuses a link of
// another type under its name, and deletes it; network status reports
// each state.
func TestLinksBridge(t *testing.T) {
	host := newTestNS(t)
	s := testSettings(t)
	hostOnly, nat := s.Bridges()
	ensure := func() (created bool) {
		host.do(func() (err error) { created, err = ensureBridge(hostOnly); return err })
		return created
	}
	check := func(when string) {
		t.Helper()
		l := host.link(hostOnly.Name)
		if _, ok := l.(*netlink.Bridge); !ok {
			t.Fatalf("%s: %s is %v, not a bridge", when, hostOnly.Name, l)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: the bridge is down", when)
		}
		got := host.addrs(hostOnly.Name)
		slices.Sort(got)
		if want := []string{hostOnly.IPv4.String(), hostOnly.IPv6.String()}; !slices.Equal(got, want) {
			t.Errorf("%s: the bridge's addresses are %v, want %v", when, got, want)
		}
		if v := host.sysctl("net/ipv4/conf/" + hostOnly.Name + "/route_localnet"); v != "1" {
			t.Errorf("%s: route_localnet is %s on the bridge, want 1", when, v)
		}
	}
	status := func() BridgeStatus {
		var st Status
		host.do(func() error { st = ReadStatus(s, "up0"); return nil })
		if st.Table != s.Table || st.TablesPresent || st.Uplink != "up0" || len(st.Bridges) != 2 || st.Bridges[1].Exists {
			t.Errorf("status %+v", st)
		}
		return st.Bridges[0]
	}
	if bs := status(); bs.Exists || bs.Up {
		t.Errorf("status before: %+v", bs)
	}

	if !ensure() {
		t.Error("a new bridge was not reported created")
	}
	check("created")
	if bs := status(); !bs.Exists || !bs.Up || len(bs.Missing) != 0 || len(bs.Addresses) != 2 || bs.Ports != 0 {
		t.Errorf("status of the new bridge: %+v", bs)
	}
	if ensure() {
		t.Error("an existing bridge was reported created")
	}
	check("ensured again")

	// Repaired: its addresses deleted and it set down behind nixcell's back.
	host.do(func() error {
		l, err := netlink.LinkByName(hostOnly.Name)
		if err != nil {
			return err
		}
		for _, p := range []netip.Prefix{hostOnly.IPv4, hostOnly.IPv6} {
			a, _ := netlink.ParseAddr(p.String())
			if err := netlink.AddrDel(l, a); err != nil {
				return fmt.Errorf("deleting %s: %w", p, err)
			}
		}
		return netlink.LinkSetDown(l)
	})
	if bs := status(); bs.Up || len(bs.Missing) != 2 {
		t.Errorf("status of the damaged bridge: %+v, want down and missing both addresses", bs)
	}
	if ensure() {
		t.Error("a repaired bridge was reported created")
	}
	check("repaired")
	if bs := status(); !bs.Up || len(bs.Missing) != 0 {
		t.Errorf("status of the repaired bridge: %+v", bs)
	}

	// A link of another kind under the bridge's name is left alone.
	host.do(func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nat.Name}, PeerName: "peer0"})
	})
	err := host.try(func() error { _, err := ensureBridge(nat); return err })
	if err == nil || !strings.Contains(err.Error(), "is a veth, not a bridge") {
		t.Errorf("ensureBridge over a veth: %v", err)
	}
	if _, ok := host.link(nat.Name).(*netlink.Veth); !ok {
		t.Errorf("the veth %s was replaced", nat.Name)
	}

	host.do(func() error { return deleteLink(hostOnly.Name) })
	if host.link(hostOnly.Name) != nil {
		t.Error("deleteLink left the bridge")
	}
	host.do(func() error { return deleteLink(hostOnly.Name) }) // idempotent
}

// TestLinksBridgeSubnetInUse: a bridge whose subnet another interface of
// the host has an address in (another instance's bridge with the same
// subnets) is refused, naming that interface, and nothing is left; the
// bridge is made once the subnet is free.
func TestLinksBridgeSubnetInUse(t *testing.T) {
	host := newTestNS(t)
	s := testSettings(t)
	hostOnly, _ := s.Bridges()
	other := hostOnly
	other.Name = "other0"
	other.IPv6 = netip.MustParsePrefix("fd00:5ab:5ab::1/64")
	host.do(func() error { _, err := ensureBridge(other); return err })
	err := host.try(func() error { _, err := ensureBridge(hostOnly); return err })
	if !errors.Is(err, ErrSubnetInUse) || !strings.Contains(err.Error(), "other0") || !strings.Contains(err.Error(), "NIXCELL_HOSTONLY_SUBNET") {
		t.Errorf("a bridge of a subnet in use: %v", err)
	}
	if host.link(hostOnly.Name) != nil {
		t.Errorf("the refused bridge %s was left", hostOnly.Name)
	}
	host.do(func() error { return deleteLink(other.Name) })
	host.do(func() error { _, err := ensureBridge(hostOnly); return err })
	if host.link(hostOnly.Name) == nil {
		t.Error("no bridge once the subnet was free")
	}
}

// TestLinksAttachBridged attaches a NAT container's interfaces (eth0 on
// the host-only bridge, internet on the NAT bridge) into a second
// namespace that stands in for the container's, checks its addresses,
// routes and reach, re-attaches over leftovers, and detaches.
func TestLinksAttachBridged(t *testing.T) {
	host, ctr := newTestNS(t), newTestNS(t)
	s := testSettings(t)
	hostOnly, nat := s.Bridges()
	n := spec.Network{EnableNat: true}
	a, err := s.Allocate("web", n, Addresses{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := s.PlanFor("web", n, a)
	host.do(func() error {
		for _, b := range []Bridge{hostOnly, nat} {
			if _, err := ensureBridge(b); err != nil {
				return err
			}
		}
		return Attach(ctr.tid, plan)
	})
	checkAttached(t, host, ctr, plan)
	if got := defaultRoutes(t, ctr); !slices.Equal(got, []string{"10.60.0.1 internet", "fd12:3456:789a:2::1 internet"}) {
		t.Errorf("default routes inside: %v, want one per family via the NAT bridge", got)
	}
	var bs BridgeStatus
	host.do(func() error { bs = ReadStatus(s, "").Bridges[0]; return nil })
	if bs.Ports != 1 {
		t.Errorf("status: %d ports on the host-only bridge, want 1", bs.Ports)
	}
	// The container reaches the host's bridge addresses over each link.
	for _, addr := range []netip.Addr{hostOnly.IPv4.Addr(), hostOnly.IPv6.Addr(), nat.IPv4.Addr(), nat.IPv6.Addr()} {
		ap := netip.AddrPortFrom(addr, 7000)
		serve(t, host, ap.String())
		if got, err := dial(ctr, ap.String()); err != nil || got != "you are "+peerOf(plan, addr) {
			t.Errorf("container to the host at %s: %q, %v", ap, got, err)
		}
	}

	// A second start finds the host ends of an init that died: they are
	// replaced, and the interfaces follow into the new namespace.
	ctr2 := newTestNS(t)
	host.do(func() error { return Attach(ctr2.tid, plan) })
	checkAttached(t, host, ctr2, plan)
	if ctr.link("eth0") != nil {
		t.Error("the first namespace kept its eth0 after the host end was replaced")
	}

	host.do(func() error { return Detach(plan) })
	for _, i := range plan.Interfaces {
		if host.link(i.HostName) != nil || ctr2.link(i.Name) != nil {
			t.Errorf("%s (%s) remains after Detach", i.Name, i.HostName)
		}
	}
	host.do(func() error { return Detach(plan) }) // idempotent
	host.do(func() error { return Attach(ctr2.tid, plan) })
	host.do(func() error { return s.DetachContainer("web") })
	for _, i := range plan.Interfaces {
		if host.link(i.HostName) != nil {
			t.Errorf("%s remains after DetachContainer", i.HostName)
		}
	}
}

// TestLinksAttachPrivateVeth attaches a private veth pair (nixos-container's
// privateNetwork): the host end has the host addresses and routes to the
// container's, and the container routes everything through it.
func TestLinksAttachPrivateVeth(t *testing.T) {
	testutil.RequiresCommands(t, "ip")
	host, ctr := newTestNS(t), newTestNS(t)
	s := testSettings(t)
	n := spec.Network{
		HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32"),
		HostAddress6: netip.MustParsePrefix("fd00:9::1/128"), LocalAddress6: netip.MustParsePrefix("fd00:9::2/128"),
	}
	plan := s.PlanFor("pv", n, Addresses{})
	host.do(func() error { return Attach(ctr.tid, plan) })
	checkAttached(t, host, ctr, plan)
	hostEnd := plan.Interfaces[0].HostName
	if got := host.addrs(hostEnd); !slices.Contains(got, "10.9.0.1/32") || !slices.Contains(got, "fd00:9::1/128") {
		t.Errorf("host end addresses %v", got)
	}
	if v := host.sysctl("net/ipv4/conf/" + hostEnd + "/route_localnet"); v != "1" {
		t.Errorf("route_localnet on the host end: %s", v)
	}
	routes := host.cmd("ip", "route", "show", "10.9.0.2") + host.cmd("ip", "-6", "route", "show", "fd00:9::2")
	if !strings.Contains(routes, "10.9.0.2 dev "+hostEnd) || !strings.Contains(routes, "fd00:9::2 dev "+hostEnd) {
		t.Errorf("the host's routes to the container:\n%s", routes)
	}
	if got := defaultRoutes(t, ctr); !slices.Equal(got, []string{"10.9.0.1 eth0", "fd00:9::1 eth0"}) {
		t.Errorf("default routes inside: %v", got)
	}
	for _, ap := range []string{"10.9.0.1:7000", "[fd00:9::1]:7000"} {
		serve(t, host, ap)
		if got, err := dial(ctr, ap); err != nil || !strings.HasPrefix(got, "you are 10.9.0.2") && !strings.HasPrefix(got, "you are fd00:9::2") {
			t.Errorf("container to the host at %s: %q, %v", ap, got, err)
		}
	}
}

// TestLinksMacvlanAndUndo gives a container a macvlan of a host interface,
// and checks that an Attach that fails leaves no host end behind.
func TestLinksMacvlanAndUndo(t *testing.T) {
	host, ctr := newTestNS(t), newTestNS(t)
	// A veth end stands in for a host NIC.
	host.do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("up0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	host.do(func() error { return Attach(ctr.tid, Plan{Macvlans: []string{"up0"}}) })
	mv, ok := ctr.link("mv-up0").(*netlink.Macvlan)
	if !ok || mv.Attrs().Flags&net.FlagUp == 0 || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
		t.Errorf("macvlan inside: %+v", ctr.link("mv-up0"))
	}
	if err := host.try(func() error { return Attach(ctr.tid, Plan{Macvlans: []string{"nosuch0"}}) }); err == nil || !strings.Contains(err.Error(), "no host interface nosuch0") {
		t.Errorf("macvlan of a missing interface: %v", err)
	}

	bad := Plan{Interfaces: []Interface{
		{Name: "eth0", HostName: "ncundo0", HostAddrs: []netip.Prefix{netip.MustParsePrefix("10.8.0.1/32")}, Addrs: []netip.Prefix{netip.MustParsePrefix("10.8.0.2/32")}},
		{Name: "eth1", HostName: "ncundo1", Bridge: "nosuchbr"},
	}}
	err := host.try(func() error { return Attach(ctr.tid, bad) })
	if err == nil || !strings.Contains(err.Error(), "bridge nosuchbr") {
		t.Errorf("Attach to a missing bridge: %v", err)
	}
	for _, name := range []string{"ncundo0", "ncundo1"} {
		if host.link(name) != nil {
			t.Errorf("the failed Attach left %s", name)
		}
	}
	if ctr.link("eth0") != nil || ctr.link("eth1") != nil {
		t.Error("the failed Attach left interfaces inside")
	}
}

// TestLinksForwardingAndUplink turns on forwarding, keeping router
// advertisements accepted where they were, and finds the uplink.
func TestLinksForwardingAndUplink(t *testing.T) {
	host, other := newTestNS(t), newTestNS(t)
	veth(t, host, "up0", []string{"192.0.2.1/24"}, other, "eth0", []string{"192.0.2.2/24"})
	host.do(func() error {
		if u := DefaultUplink(); u != "" {
			return fmt.Errorf("uplink %q without a default route", u)
		}
		l, err := netlink.LinkByName("up0")
		if err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("192.0.2.2")}); err != nil {
			return err
		}
		if u := DefaultUplink(); u != "up0" {
			return fmt.Errorf("uplink %q, want up0", u)
		}
		for path, v := range map[string]string{"net/ipv6/conf/all/forwarding": "0", "net/ipv6/conf/up0/accept_ra": "1"} {
			if err := sysctl(path, v); err != nil {
				return err
			}
		}
		return enableForwarding()
	})
	for path, want := range map[string]string{
		"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
		"net/ipv6/conf/up0/accept_ra": "2", // still accepted with forwarding on
	} {
		if got := host.sysctl(path); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
}

// checkAttached checks the interfaces of plan: each host end up (and a
// port of its bridge), each inside up with its addresses, lo up inside.
func checkAttached(t *testing.T, host, ctr *testNS, plan Plan) {
	t.Helper()
	for _, i := range plan.Interfaces {
		h := host.link(i.HostName)
		if h == nil || h.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("host end %s: %v", i.HostName, h)
			continue
		}
		if i.Bridge != "" {
			if br := host.link(i.Bridge); br == nil || h.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("host end %s is not a port of %s", i.HostName, i.Bridge)
			}
		}
		in := ctr.link(i.Name)
		if in == nil || in.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s inside: %v", i.Name, in)
			continue
		}
		got := ctr.addrs(i.Name)
		for _, want := range i.Addrs {
			if !slices.Contains(got, want.String()) {
				t.Errorf("%s inside has %v, lacks %s", i.Name, got, want)
			}
		}
	}
	if lo := ctr.link("lo"); lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down inside")
	}
}

// defaultRoutes lists the default routes of a namespace as "GATEWAY DEV",
// IPv4 first.
func defaultRoutes(t *testing.T, ns *testNS) []string {
	t.Helper()
	var out []string
	ns.do(func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := netlink.RouteList(nil, fam)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && r.Dst.Mask[0] == 0) || r.Gw == nil {
					continue
				}
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return err
				}
				out = append(out, r.Gw.String()+" "+l.Attrs().Name)
			}
		}
		return nil
	})
	return out
}

// peerOf is the container's address on the subnet of the host's addr.
func peerOf(plan Plan, addr netip.Addr) string {
	for _, i := range plan.Interfaces {
		for _, p := range i.Addrs {
			if p.Masked().Contains(addr) {
				return p.Addr().String()
			}
		}
	}
	return ""
}

// serve listens on addr (TCP) in ns until the test ends, answering each
// connection with the address it came from ("you are ADDR").
func serve(t *testing.T, ns *testNS, addr string) {
	t.Helper()
	var l net.Listener
	ns.do(func() (err error) { l, err = net.Listen("tcp", addr); return err })
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "you are %s\n", host)
			c.Close()
		}
	}()
}

// dial connects to addr from ns and returns the line the server sent.
func dial(ns *testNS, addr string) (string, error) {
	var c net.Conn
	if err := ns.try(func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return err }); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return strings.TrimSpace(line), err
	}
	return strings.TrimSpace(line), nil
}
