package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/testutil"
)

// TestApply converges a fresh namespace, standing in for the host, to two
// running containers, each in a namespace of its own: web on the
// host-only bridge and natweb with NAT, each forwarding a host port. A LAN
// client in a fourth namespace reaches the forwards on the host's
// addresses, IPv4 and IPv6, as the host does on its own addresses and on
// 127.0.0.1, and each container sees the real client address. natweb
// reaches the client masqueraded; web's own connections out are refused
// at once. Then Apply with nothing left takes it all down.
func TestApply(t *testing.T) {
	testutil.RequiresCommands(t, "nft", "ip")
	host, client, webNS, natNS := newTestNS(t), newTestNS(t), newTestNS(t), newTestNS(t)
	veth(t, host, "lan0", []string{"192.0.2.1/24", "fd00:c1::1/64"}, client, "eth0", []string{"192.0.2.2/24", "fd00:c1::2/64"})
	client.cmd("ip", "route", "add", "default", "via", "192.0.2.1")
	client.cmd("ip", "-6", "route", "add", "default", "via", "fd00:c1::1")
	hostsFile := filepath.Join(t.TempDir(), "hosts")
	const hostsOrig = "127.0.0.1 localhost\n"
	if err := os.WriteFile(hostsFile, []byte(hostsOrig), 0o644); err != nil {
		t.Fatal(err)
	}

	s := testSettings(t)
	st := State{Settings: s, Addresses: map[string]Addresses{}}
	members := []Member{
		{Name: "web", Network: spec.Network{ForwardPorts: []spec.PortForward{{Protocol: "tcp", HostPort: 8080, ContainerPort: 80}}}},
		{Name: "natweb", Network: spec.Network{EnableNat: true, ForwardPorts: []spec.PortForward{{Protocol: "tcp", HostPort: 8081, ContainerPort: 80}}}},
	}
	for _, m := range members {
		a, err := s.Allocate(m.Name, m.Network, Addresses{}, st.Addresses)
		if err != nil {
			t.Fatal(err)
		}
		st.Addresses[m.Name] = a
		if err := st.ClaimPorts(m.Name, m.Network.ForwardPorts); err != nil {
			t.Fatal(err)
		}
	}
	hostInfo := Host{Uplink: "lan0", HostsFile: hostsFile}
	host.do(func() error { return st.Apply(members, hostInfo) })
	d := st.Desired(members, hostInfo)
	for _, c := range d.Containers {
		ns := map[string]*testNS{"web": webNS, "natweb": natNS}[c.Name]
		host.do(func() error { return Attach(ns.tid, c.Plan) })
		serve(t, ns, ":80")
	}
	hostOnly, nat := s.Bridges()
	if got := defaultRoutes(t, webNS); !slices.Equal(got, []string{hostOnly.IPv4.Addr().String() + " eth0", hostOnly.IPv6.Addr().String() + " eth0"}) {
		t.Errorf("web's default routes: %v, want via the host-only bridge", got)
	}
	if got := defaultRoutes(t, natNS); !slices.Equal(got, []string{nat.IPv4.Addr().String() + " internet", nat.IPv6.Addr().String() + " internet"}) {
		t.Errorf("natweb's default routes: %v, want via the NAT bridge only", got)
	}

	for _, c := range []struct {
		name string
		port int
	}{{"web", 8080}, {"natweb", 8081}} {
		for _, f := range []struct {
			from        *testNS
			what, to    string
			wantAddress string // "" for any
		}{
			{client, "a LAN client", "192.0.2.1", "192.0.2.2"},
			{client, "a LAN client", "fd00:c1::1", "fd00:c1::2"},
			{host, "the host, at its address", "192.0.2.1", "192.0.2.1"},
			{host, "the host, at its address", "fd00:c1::1", "fd00:c1::1"},
			{host, "the host, at 127.0.0.1", "127.0.0.1", ""},
		} {
			addr := net.JoinHostPort(f.to, fmt.Sprint(c.port))
			// The first connection over a new IPv6 path may wait for
			// neighbour discovery: try again for a while.
			var got string
			var err error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if got, err = dial(f.from, addr); err == nil {
					break
				}
			}
			if err != nil || !strings.HasPrefix(got, "you are "+f.wantAddress) {
				t.Errorf("%s's forward from %s to %s: %q, %v; want the container to see %q", c.name, f.what, addr, got, err, f.wantAddress)
			}
		}
	}

	// Out of the containers: NAT rewrites natweb's source to the uplink's
	// address; web, host-only, is refused at once (not left to time out).
	serve(t, client, ":9000")
	for _, to := range []struct{ addr, natAs string }{{"192.0.2.2:9000", "192.0.2.1"}, {"[fd00:c1::2]:9000", "fd00:c1::1"}} {
		if got, err := dial(natNS, to.addr); err != nil || got != "you are "+to.natAs {
			t.Errorf("natweb to %s: %q, %v; want it seen as %s", to.addr, got, err, to.natAs)
		}
		got, err := dial(webNS, to.addr)
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("web (host-only) to %s: %q, %v; want the connection refused at once", to.addr, got, err)
		}
	}
	// Nor does anything reach web but its forwards.
	if got, err := dial(client, net.JoinHostPort(st.Addresses["web"].HostOnly4.String(), "80")); err == nil {
		t.Errorf("a LAN client reached web directly: %q", got)
	}

	hosts, _ := os.ReadFile(hostsFile)
	for _, c := range d.Containers {
		if !strings.Contains(string(hosts), c.Addresses.HostOnly4.String()+"\t"+c.Name+"\n") {
			t.Errorf("the hosts file lacks %s:\n%s", c.Name, hosts)
		}
	}

	// Everything goes: stopped, then destroyed.
	for _, c := range d.Containers {
		host.do(func() error { return Detach(c.Plan) })
	}
	host.do(func() error { return st.Apply(nil, hostInfo) })
	if host.link(hostOnly.Name) == nil || host.link(nat.Name) == nil {
		t.Error("a bridge went while its containers still hold addresses")
	}
	if got, _ := os.ReadFile(hostsFile); string(got) != hostsOrig {
		t.Errorf("the hosts file without running containers:\n%s", got)
	}
	st.Addresses, st.Ports = map[string]Addresses{}, nil
	host.do(func() error { return st.Apply(nil, hostInfo) })
	host.do(func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if n := l.Attrs().Name; n != "lo" && n != "lan0" {
				return fmt.Errorf("%s remains after the last container went", n)
			}
		}
		return err
	})
	if got := nftTables(host, s.Table); got != "" {
		t.Errorf("tables remain after the last container went:\n%s", got)
	}
}
