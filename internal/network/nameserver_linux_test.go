package network

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nixcell/nixcell/internal/lockfile"
)

// TestNameServer runs the name server in a fresh namespace whose
// host-only bridge carries two containers' interfaces, each in a namespace
// of its own, and asks it over real UDP, as those containers' resolvers
// do: each sees the names it may reach. A bridge that appears later is
// served after the next change of the table, so is a change of who runs,
// and the server ends when nothing runs, leaving nothing behind.
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

	// The server is this test binary, as it is the nixcell binary: the
	// constructor in nameserver.c serves before the Go runtime starts.
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o711); err != nil {
		t.Fatal(err)
	}
	ns := NameServer{Table: filepath.Join(run, "dns.table"), Lock: filepath.Join(run, "dns.lock"), GlobalLock: filepath.Join(t.TempDir(), "global.lock")}
	if err := WriteNameTable(ns.Table, d, len(d.Containers)); err != nil {
		t.Fatal(err)
	}
	// start starts a server; what it returns gives how it exited, once,
	// and is closed then.
	start := func() <-chan error {
		t.Helper()
		cmd := exec.Command("/proc/self/exe", ns.Args()...)
		cmd.Env = []string{NameServerEnv}
		host.do(cmd.Start) // forked from the namespace's thread: it serves there
		ended := make(chan error, 1)
		go func() {
			ended <- cmd.Wait()
			close(ended)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-ended
		})
		return ended
	}
	servers := []<-chan error{start()}

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

	// A second one for the instance leaves at once.
	select {
	case err := <-start():
		if err != nil {
			t.Errorf("a second name server: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second name server for the instance still runs")
	}

	// The NAT bridge appears; after the next change it is served too.
	host.do(func() error { _, err := ensureBridge(nat); return err })
	if err := WriteNameTable(ns.Table, d, len(d.Containers)); err != nil {
		t.Fatal(err)
	}
	if rcode, _ := ask(host, nat.IPv4.Addr(), "c.", dnsmessage.TypeA); rcode != dnsmessage.RCodeNameError {
		t.Errorf("the host (not a container) asked on the NAT bridge: %v, want NXDOMAIN", rcode)
	}
	// Who runs changes: d is gone, a new one takes its address.
	d.Containers[2].Name = "e"
	if err := WriteNameTable(ns.Table, d, len(d.Containers)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rcodeD, _ := ask(cNS, hostOnly.IPv4.Addr(), "d.", dnsmessage.TypeA)
		rcodeE, got := ask(cNS, hostOnly.IPv4.Addr(), "e.", dnsmessage.TypeA)
		if rcodeD == dnsmessage.RCodeNameError && rcodeE == dnsmessage.RCodeSuccess && slices.Equal(got, []netip.Addr{d4}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the change: d %v, e %v %v; want NXDOMAIN, %v", rcodeD, rcodeE, got, d4)
		}
	}

	// The last container stops and another starts at once, as nixcell
	// does it (cell's changeNetwork, then ensureDNS): whether the server
	// was leaving or not, one answers. (The run table keeps the directory
	// from being removed meanwhile.)
	runs := filepath.Join(run, "runs.json")
	if err := os.WriteFile(runs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := WriteNameTable(ns.Table, d, 0); err != nil {
			t.Fatal(err)
		}
		if err := WriteNameTable(ns.Table, d, len(d.Containers)); err != nil {
			t.Fatal(err)
		}
		if lock, err := lockfile.TryLock(ns.Lock); err == nil {
			_ = lock.Unlock()
			servers = append(servers, start())
		}
		if rcode, got := ask(cNS, hostOnly.IPv4.Addr(), "e.", dnsmessage.TypeA); rcode != dnsmessage.RCodeSuccess || !slices.Equal(got, []netip.Addr{d4}) {
			t.Fatalf("after a stop and a start: %v %v, want %v", rcode, got, d4)
		}
	}
	if err := os.Remove(runs); err != nil {
		t.Fatal(err)
	}

	// Nothing runs any more: the server ends, and removes its lock and
	// the run directory, which nothing else holds.
	if err := WriteNameTable(ns.Table, d, 0); err != nil {
		t.Fatal(err)
	}
	for _, ended := range servers {
		select {
		case err := <-ended:
			if err != nil {
				t.Errorf("the name server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the name server still runs after nothing runs")
		}
	}
	if _, err := os.Lstat(run); !errors.Is(err, fs.ErrNotExist) {
		left, _ := filepath.Glob(filepath.Join(run, "*"))
		t.Errorf("the run directory is left, holding %v (%v)", left, err)
	}
}
