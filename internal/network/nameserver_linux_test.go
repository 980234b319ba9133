package network

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TestNameServer runs the name server in a fresh namespace whose
// host-only bridge carries two containers' interfaces, each in a namespace
// of its own, and asks it over real UDP, as those containers' resolvers
// do: each sees the names it may reach. A bridge that appears later is
// served after the next change, and the server ends when nothing runs.
func TestNameServer(t *testing.T) {
	host, cNS, aNS := newTestNS(t), newTestNS(t), newTestNS(t)
	d := peersDesired(t) // a, c (allowPeers), d (allowPeers)
	hostOnly, nat := d.Settings.Bridges()
	host.do(func() error {
		if _, err := ensureBridge(hostOnly); err != nil {
			return err
		}
		for _, c := range d.Containers {
			ns := map[string]*testNS{"a": aNS, "c": cNS}[c.Name]
			if ns == nil {
				continue // d runs nowhere: its name is all that is asked
			}
			if err := Attach(ns.tid, c.Plan); err != nil {
				return err
			}
		}
		return nil
	})

	watched := filepath.Join(t.TempDir(), "network.json")
	if err := os.WriteFile(watched, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	running := true
	current := func() (Desired, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return d, running, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ended := make(chan error, 1)
	host.goIn(func() { ended <- ServeDNS(ctx, []string{watched}, current) })

	ask := func(from *testNS, server netip.Addr, name string, typ dnsmessage.Type) (dnsmessage.RCode, []netip.Addr) {
		t.Helper()
		query := dnsQuery(t, 9, name, typ)
		var reply []byte
		// The server binds its addresses once it has read the state: ask
		// until it answers.
		for deadline := time.Now().Add(10 * time.Second); ; {
			err := from.try(func() error {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(server, DNSPort)))
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Write(query); err != nil {
					return err
				}
				buf := make([]byte, 1500)
				n, err := c.Read(buf)
				reply = buf[:n]
				return err
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer from %s for %s: %v", server, name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		h, addrs := parseReply(t, reply)
		return h.RCode, addrs
	}
	d4, d6 := netip.MustParseAddr("10.50.0.4"), netip.MustParseAddr("fd12:3456:789a:1::4")
	for _, q := range []struct {
		from   *testNS
		server netip.Addr
		name   string
		typ    dnsmessage.Type
		rcode  dnsmessage.RCode
		want   []netip.Addr
	}{
		{cNS, hostOnly.IPv4.Addr(), "d.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{d4}},
		{cNS, hostOnly.IPv6.Addr(), "d.nixcell.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []netip.Addr{d6}},
		{cNS, hostOnly.IPv4.Addr(), "a.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{aNS, hostOnly.IPv4.Addr(), "c.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{aNS, hostOnly.IPv6.Addr(), "a.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("10.50.0.2")}},
	} {
		if rcode, got := ask(q.from, q.server, q.name, q.typ); rcode != q.rcode || !slices.Equal(got, q.want) {
			t.Errorf("%s %v at %s: %v %v, want %v %v", q.name, q.typ, q.server, rcode, got, q.rcode, q.want)
		}
	}

	// The NAT bridge appears; after the next change it is served too.
	host.do(func() error { _, err := ensureBridge(nat); return err })
	// A change: the watched file's modification time moves.
	touch := func(by time.Duration) {
		t.Helper()
		later := time.Now().Add(by)
		if err := os.Chtimes(watched, later, later); err != nil {
			t.Fatal(err)
		}
	}
	touch(time.Hour)
	if rcode, _ := ask(host, nat.IPv4.Addr(), "c.", dnsmessage.TypeA); rcode != dnsmessage.RCodeNameError {
		t.Errorf("the host (not a container) asked on the NAT bridge: %v, want NXDOMAIN", rcode)
	}

	// Nothing runs any more: the server ends.
	mu.Lock()
	running = false
	mu.Unlock()
	touch(2 * time.Hour)
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("ServeDNS: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("ServeDNS still runs after nothing runs")
	}
}
