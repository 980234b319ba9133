package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/testutil"
)

// testNet is the address plan of one network test: its own subnets for
// the managed bridges, a "LAN" link to a client namespace and an "uplink"
// to an "outside" namespace that plays the internet. Traffic goes only
// between the test's own namespaces, the host and loopback.
type testNet struct {
	n            int    // picks the test's address blocks
	lanNS, outNS string // network namespaces of the LAN client and the outside host
	lanIf, outIf string // host ends of the links to them
	hostLAN4     string // the host's address on the LAN link
	clientLAN4   string // the LAN client's address
	hostLAN6     string
	clientLAN6   string
	hostOut4     string // the host's uplink address
	outside4     string // the outside host's address
	hostOut6     string
	outside6     string
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newTestNet creates the client namespaces and links, and points the
// instance at its own subnets and uplink. Everything is removed when the
// test ends.
func newTestNet(t *testing.T, in *instance) *testNet {
	t.Helper()
	testutil.RequiresCommands(t, "ip", "nft")
	n := 9 + freeSubnet(t, func(k int) []string {
		n := 9 + k%200
		return []string{fmt.Sprintf("10.%d.0.0/16", n), fmt.Sprintf("198.18.%d.0/24", n), fmt.Sprintf("198.19.%d.0/24", n)}
	})%200
	tn := &testNet{
		n:     n,
		lanNS: fmt.Sprintf("nclan%d", n), outNS: fmt.Sprintf("ncout%d", n),
		lanIf: fmt.Sprintf("nclan%d", n), outIf: fmt.Sprintf("ncout%d", n),
		hostLAN4: fmt.Sprintf("198.18.%d.1", n), clientLAN4: fmt.Sprintf("198.18.%d.2", n),
		hostLAN6: fmt.Sprintf("fd00:198:18:%x::1", n), clientLAN6: fmt.Sprintf("fd00:198:18:%x::2", n),
		hostOut4: fmt.Sprintf("198.19.%d.1", n), outside4: fmt.Sprintf("198.19.%d.2", n),
		hostOut6: fmt.Sprintf("fd00:198:19:%x::1", n), outside6: fmt.Sprintf("fd00:198:19:%x::2", n),
	}
	in.env = append(in.env, // later entries win
		fmt.Sprintf("NIXCELL_HOSTONLY_SUBNET=10.%d.1.0/24", n),
		fmt.Sprintf("NIXCELL_NAT_SUBNET=10.%d.2.0/24", n),
		fmt.Sprintf("NIXCELL_ULA_PREFIX=fd%02x:%x::/48", n%256, n),
		"NIXCELL_UPLINK="+tn.outIf,
	)
	t.Cleanup(func() {
		for _, ns := range []string{tn.lanNS, tn.outNS} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		for _, l := range []string{tn.lanIf, tn.outIf} {
			_ = exec.Command("ip", "link", "del", l).Run()
		}
	})
	for _, l := range []struct{ ns, hostIf, host4, peer4, host6, peer6 string }{
		{tn.lanNS, tn.lanIf, tn.hostLAN4, tn.clientLAN4, tn.hostLAN6, tn.clientLAN6},
		{tn.outNS, tn.outIf, tn.hostOut4, tn.outside4, tn.hostOut6, tn.outside6},
	} {
		run(t, "ip", "netns", "add", l.ns)
		run(t, "ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", "eth0", "netns", l.ns)
		run(t, "ip", "addr", "add", l.host4+"/24", "dev", l.hostIf)
		run(t, "ip", "addr", "add", l.host6+"/64", "dev", l.hostIf, "nodad")
		run(t, "ip", "link", "set", l.hostIf, "up")
		run(t, "ip", "-n", l.ns, "addr", "add", l.peer4+"/24", "dev", "eth0")
		run(t, "ip", "-n", l.ns, "addr", "add", l.peer6+"/64", "dev", "eth0", "nodad")
		run(t, "ip", "-n", l.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	}
	// The LAN client routes everything through the host; the outside host
	// knows no route to the containers, so only NAT can reach it.
	run(t, "ip", "-n", tn.lanNS, "route", "add", "default", "via", tn.hostLAN4)
	run(t, "ip", "-n", tn.lanNS, "-6", "route", "add", "default", "via", tn.hostLAN6)
	return tn
}

// inNetns runs f on a thread in the named network namespace (or the
// container whose init has pid, when ns is a number).
func inNetns(t testing.TB, ns string, f func()) {
	t.Helper()
	path := "/run/netns/" + ns
	if _, err := fmt.Sscanf(ns, "%d", new(int)); err == nil {
		path = "/proc/" + ns + "/ns/net"
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("entering network namespace %s: %v", ns, err)
	}
}

// peerServer listens on addr in namespace ns (sockets keep the namespace
// they were made in) and answers each TCP connection with the address it
// came from.
func peerServer(t *testing.T, ns, addr string) {
	t.Helper()
	var l net.Listener
	var err error
	inNetns(t, ns, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns, err)
	}
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

// httpGet fetches / from addr (host:port) from namespace ns.
func httpGet(t *testing.T, ns, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	connect := func() { c, err = net.DialTimeout("tcp", addr, 2*time.Second) }
	if ns == "" {
		connect()
	} else {
		inNetns(t, ns, connect)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	data, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := strings.Cut(string(data), "\r\n\r\n")
	return body, nil
}

type addrs struct {
	IPv4    string `json:"ipv4"`
	IPv6    string `json:"ipv6"`
	NATIPv4 string `json:"natIPv4"`
	NATIPv6 string `json:"natIPv6"`
}

func (in *instance) addrs(name string) addrs {
	in.t.Helper()
	var a addrs
	if err := json.Unmarshal([]byte(in.must("show-ip", "--json", name)), &a); err != nil {
		in.t.Fatal(err)
	}
	return a
}

func join(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

// hostState is what must look the same before and after a test's
// containers come and go: links, addresses, the nftables ruleset and the
// hosts file. What other nixcell instances (tests running at the same
// time) own is left out.
func hostState(t *testing.T, in *instance) string {
	t.Helper()
	ours := "nixcell-" + in.store.ID
	ourPorts := network.HostIfName(ours, "x", "eth0")[:6]
	foreign := regexp.MustCompile(`\b(nixcell-[0-9a-f]{8}|nc[hn]-[0-9a-f]{8}|nc[0-9a-f]{12})\b`)
	isForeign := func(l string) bool {
		for _, m := range foreign.FindAllString(l, -1) {
			if m != ours && m != "nch-"+in.store.ID && m != "ncn-"+in.store.ID && !strings.HasPrefix(m, ourPorts) {
				return true
			}
		}
		return false
	}
	var keep []string
	for _, l := range strings.Split(run(t, "ip", "-o", "link"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && !isForeign(f[1]) {
			keep = append(keep, f[1])
		}
	}
	for _, l := range strings.Split(run(t, "ip", "-o", "addr"), "\n") {
		if !strings.Contains(l, "scope link") && !isForeign(l) { // link-local flags change on their own
			keep = append(keep, l)
		}
	}
	skip := false
	for _, l := range strings.Split(run(t, "nft", "list", "ruleset"), "\n") {
		if strings.HasPrefix(l, "table ") {
			skip = isForeign(l)
		}
		if !skip {
			keep = append(keep, l)
		}
	}
	// Other instances (tests running beside this one) publish their
	// containers' names in blocks of their own.
	hosts, _ := os.ReadFile("/etc/hosts")
	inForeign := false
	for _, l := range strings.Split(string(hosts), "\n") {
		switch {
		case strings.HasPrefix(l, "# begin "):
			inForeign = isForeign(l)
		case strings.HasPrefix(l, "# end "):
			if inForeign {
				inForeign = false
				continue
			}
		}
		if !inForeign && !isForeign(l) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestNetworkHostOnly checks the default network: the host reaches
// containers over IPv4 and IPv6, containers reach the host's bridge
// address but nothing beyond it, and they reach each other only when both
// allow it.
func TestNetworkHostOnly(t *testing.T) {
	in := newInstance(t)
	tn := newTestNet(t, in)
	before := hostState(t, in)
	peerServer(t, tn.outNS, join(tn.outside4, 9000))
	peerServer(t, tn.outNS, join(tn.outside6, 9000))

	names := map[string]string{}
	for _, c := range []struct{ key, allow string }{{"a", "false"}, {"b", "false"}, {"c", "true"}, {"d", "true"}} {
		names[c.key] = testutil.Name("net" + c.key)
		in.create(names[c.key], fmt.Sprintf(`{ network.allowPeers = %s; configuration = { name, ... }: { services.httpd.enable = true; services.httpd.text = "hello from ${name}\n"; }; }`, c.allow))
		in.must("start", names[c.key])
	}
	a, b, c, d := in.addrs(names["a"]), in.addrs(names["b"]), in.addrs(names["c"]), in.addrs(names["d"])
	if a.IPv4 == "" || a.IPv6 == "" || a.IPv4 == b.IPv4 {
		t.Fatalf("addresses: a %+v, b %+v", a, b)
	}
	if !strings.HasPrefix(a.IPv4, fmt.Sprintf("10.%d.1.", tn.n)) {
		t.Errorf("a's address %s is not in the test's host-only subnet", a.IPv4)
	}
	for _, addr := range []string{join(a.IPv4, 80), join(a.IPv6, 80)} {
		var body string
		waitFor(t, 10*time.Second, "the host to reach "+addr, func() bool {
			body, _ = httpGet(t, "", addr)
			return body == "hello from "+names["a"]+"\n"
		})
	}
	get := func(from, ip string) bool {
		url := "http://" + ip + "/"
		if strings.Contains(ip, ":") {
			url = "http://[" + ip + "]/"
		}
		r := in.run("exec", from, "--", "sh", "-c", "timeout 3 wget -qO- "+url)
		return r.code == 0
	}
	// Names resolve between containers that may talk, through nixcell's
	// name server on the bridge (the container's resolv.conf points there).
	var r result
	waitFor(t, 10*time.Second, names["c"]+" to resolve "+names["d"], func() bool {
		r = in.run("exec", names["c"], "--", "nslookup", names["d"])
		return r.code == 0 && strings.Contains(r.stdout, d.IPv4)
	})
	if r := in.run("exec", names["c"], "--", "nslookup", names["a"]); r.code == 0 || strings.Contains(r.stdout, a.IPv4) {
		t.Errorf("%s resolved %s, which it may not reach: %s", names["c"], names["a"], r)
	}
	// Names resolve on the host.
	if out := run(t, "getent", "hosts", names["a"]); !strings.HasPrefix(out, a.IPv4+" ") && !strings.HasPrefix(out, a.IPv6+" ") {
		t.Errorf("getent hosts %s = %q, want %s or %s", names["a"], out, a.IPv4, a.IPv6)
	}
	bridge4 := fmt.Sprintf("10.%d.1.1", tn.n)
	// The host's bridge address answers (a listener on the host).
	var hostL net.Listener
	var err error
	if hostL, err = net.Listen("tcp", join(bridge4, 9001)); err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	go func() {
		for {
			c, err := hostL.Accept()
			if err != nil {
				return
			}
			// Read the request first: closing with unread data resets.
			r := bufio.NewReader(c)
			for line, err := r.ReadString('\n'); err == nil && line != "\r\n"; line, err = r.ReadString('\n') {
			}
			fmt.Fprint(c, "HTTP/1.0 200 OK\r\n\r\nhost\n")
			c.Close()
		}
	}()
	if r := in.run("exec", names["a"], "--", "sh", "-c", "timeout 3 wget -qO- http://"+bridge4+":9001/"); r.code != 0 || r.stdout != "host\n" {
		t.Errorf("a cannot reach the host's bridge address: %s", r)
	}
	// a's default routes lead to the host, so that replies to forwarded
	// connections find their clients, but nothing goes beyond the host:
	// a's connections out are refused at once (nc fails by itself, not
	// killed by timeout), IPv4 and IPv6.
	bridge6 := netip.MustParsePrefix(a.IPv6 + "/64").Masked().Addr().Next().String()
	if r := in.run("exec", names["a"], "--", "ip", "route"); !strings.Contains(r.stdout, "default via "+bridge4+" dev eth0") {
		t.Errorf("a's IPv4 routes lack the default route via the host-only bridge: %s", r)
	}
	if r := in.run("exec", names["a"], "--", "ip", "-6", "route"); !strings.Contains(r.stdout, "default via "+bridge6+" dev eth0") {
		t.Errorf("a's IPv6 routes lack the default route via the host-only bridge: %s", r)
	}
	for _, server := range []string{tn.outside4, tn.outside6} {
		r := in.run("exec", names["a"], "--", "sh", "-c", "timeout 5 nc "+server+" 9000")
		if r.code == 0 || strings.Contains(r.stdout, "you are") || !strings.Contains(r.stderr, "can't connect") {
			t.Errorf("a to the outside host %s from the host-only bridge: %s; want the connection refused at once", server, r)
		}
	}
	for _, p := range []struct {
		from, to string
		ip       string
		want     bool
	}{
		{"a", "b", b.IPv4, false}, {"b", "a", a.IPv6, false}, {"c", "a", a.IPv4, false},
		{"a", "c", c.IPv4, false}, {"c", "d", d.IPv4, true}, {"d", "c", c.IPv6, true},
	} {
		if got := get(names[p.from], p.ip); got != p.want {
			t.Errorf("%s -> %s (%s): reachable %v, want %v", p.from, p.to, p.ip, got, p.want)
		}
	}

	// Addresses are stable across stop and start, and across a "host
	// reboot": bridges and tables deleted behind nixcell's back.
	in.must("stop", names["a"])
	in.must("start", names["a"])
	if got := in.addrs(names["a"]); got != a {
		t.Errorf("addresses after restart %+v, before %+v", got, a)
	}
	for _, n := range names {
		in.must("terminate", n)
	}
	st := in.store.ID
	_ = exec.Command("nft", "delete", "table", "inet", "nixcell-"+st).Run()
	_ = exec.Command("nft", "delete", "table", "bridge", "nixcell-"+st).Run()
	_ = exec.Command("ip", "link", "del", "nch-"+st).Run()
	netStatus := func() (bridge, tables bool) {
		var s struct {
			Bridges []struct {
				Exists, Up bool
				Missing    []string
			}
			TablesPresent bool
		}
		if err := json.Unmarshal([]byte(in.must("network", "status", "--json")), &s); err != nil {
			t.Fatal(err)
		}
		return s.Bridges[0].Exists && s.Bridges[0].Up && len(s.Bridges[0].Missing) == 0, s.TablesPresent
	}
	if bridge, tables := netStatus(); bridge || tables {
		t.Errorf("network status after the host reboot: bridge %v, tables %v; want both absent", bridge, tables)
	}
	in.must("start", names["a"])
	if bridge, tables := netStatus(); !bridge || !tables {
		t.Errorf("network status after start: bridge %v, tables %v; want both repaired", bridge, tables)
	}
	if got := in.addrs(names["a"]); got != a {
		t.Errorf("addresses after the host reboot %+v, before %+v", got, a)
	}
	waitFor(t, 10*time.Second, "a to answer after the host reboot", func() bool {
		body, _ := httpGet(t, "", join(a.IPv4, 80))
		return body == "hello from "+names["a"]+"\n"
	})

	for _, n := range names {
		in.must("destroy", n)
	}
	if out, err := exec.Command("getent", "hosts", names["a"]).Output(); err == nil {
		t.Errorf("%s still resolves after destroy: %s", names["a"], out)
	}
	if after := hostState(t, in); after != before {
		t.Errorf("host network state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkNATAndForwards checks NAT out of the uplink (source rewritten
// to the uplink address, IPv4 and IPv6) and TCP and UDP port forwards to a
// NAT container and to a host-only one: from a LAN client and from the
// host's own addresses (IPv4 and IPv6), and from 127.0.0.1, with the
// client's real address seen inside.
func TestNetworkNATAndForwards(t *testing.T) {
	in := newInstance(t)
	tn := newTestNet(t, in)
	before := hostState(t, in)
	peerServer(t, tn.outNS, join(tn.outside4, 9000))
	peerServer(t, tn.outNS, join(tn.outside6, 9000))

	type forwarded struct {
		name             string
		tcpPort, udpPort int
	}
	natC := forwarded{testutil.Name("nat"), 20000 + tn.n*10, 20001 + tn.n*10}
	hostOnlyC := forwarded{testutil.Name("ho"), 20002 + tn.n*10, 20003 + tn.n*10}
	for _, c := range []struct {
		forwarded
		nat bool
	}{{natC, true}, {hostOnlyC, false}} {
		in.create(c.name, fmt.Sprintf(`{
  network.enableNat = %v;
  network.forwardPorts = [
    { protocol = "tcp"; hostPort = %d; containerPort = 80; }
    { protocol = "udp"; hostPort = %d; containerPort = 5000; }
  ];
  configuration = { name, ... }: { services.httpd.enable = true; services.httpd.text = "hello from ${name}\n"; };
}`, c.nat, c.tcpPort, c.udpPort))
		in.must("start", c.name)
	}
	a := in.addrs(natC.name)
	if a.NATIPv4 == "" || a.NATIPv6 == "" {
		t.Fatalf("no NAT addresses: %+v", a)
	}

	// NAT: the outside host sees the host's uplink address.
	for _, c := range []struct{ server, want string }{{tn.outside4, tn.hostOut4}, {"[" + tn.outside6 + "]", tn.hostOut6}} {
		r := in.run("exec", natC.name, "--", "sh", "-c", "timeout 3 nc "+strings.Trim(c.server, "[]")+" 9000")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "you are "+c.want {
			t.Errorf("NAT to %s: %s; want the source rewritten to %s", c.server, r, c.want)
		}
	}

	for _, c := range []forwarded{natC, hostOnlyC} {
		// TCP forwards, from each kind of client, with the client address
		// seen by the container's web server (it logs each request's peer).
		clients := []struct{ what, ns, addr, clientIP string }{
			{"a LAN client", tn.lanNS, join(tn.hostLAN4, c.tcpPort), tn.clientLAN4},
			{"a LAN client", tn.lanNS, join(tn.hostLAN6, c.tcpPort), tn.clientLAN6},
			{"the host", "", join(tn.hostLAN4, c.tcpPort), tn.hostLAN4},
			{"the host", "", join(tn.hostLAN6, c.tcpPort), tn.hostLAN6},
			{"the host", "", join("127.0.0.1", c.tcpPort), ""},
		}
		for _, cl := range clients {
			var body string
			var err error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if body, err = httpGet(t, cl.ns, cl.addr); err == nil && body == "hello from "+c.name+"\n" {
					break
				}
			}
			if err != nil || body != "hello from "+c.name+"\n" {
				t.Errorf("%s: forward %s from %s: %q, %v", c.name, cl.addr, cl.what, body, err)
				continue
			}
			if cl.clientIP != "" {
				log := in.exec(c.name, "cat", "/var/log/httpd.log")
				if !strings.Contains(log, cl.clientIP) {
					t.Errorf("%s did not see the client address %s:\n%s", c.name, cl.clientIP, log)
				}
			}
		}

		// UDP: an echo server in the container's network namespace
		// (busybox has no UDP server), reached from the LAN client, seeing
		// its address, IPv4 and IPv6.
		ca := in.addrs(c.name)
		for _, v := range []struct{ listen, hostAddr, clientIP string }{
			{join(ca.IPv4, 5000), tn.hostLAN4, tn.clientLAN4},
			{join(ca.IPv6, 5000), tn.hostLAN6, tn.clientLAN6},
		} {
			var udp net.PacketConn
			var err error
			inNetns(t, fmt.Sprint(in.info(c.name).Pid), func() { udp, err = net.ListenPacket("udp", v.listen) })
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				buf := make([]byte, 64)
				for {
					n, from, err := udp.ReadFrom(buf)
					if err != nil {
						return
					}
					host, _, _ := net.SplitHostPort(from.String())
					_, _ = udp.WriteTo([]byte(strings.TrimSpace(string(buf[:n]))+" from "+host+"\n"), from)
				}
			}()
			var got string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got != "ping from "+v.clientIP+"\n"; {
				inNetns(t, tn.lanNS, func() {
					conn, err := net.Dial("udp", join(v.hostAddr, c.udpPort))
					if err != nil {
						return
					}
					defer conn.Close()
					_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
					_, _ = conn.Write([]byte("ping\n"))
					buf := make([]byte, 64)
					n, _ := conn.Read(buf)
					got = string(buf[:n])
				})
			}
			udp.Close()
			if got != "ping from "+v.clientIP+"\n" {
				t.Errorf("%s: the UDP forward on %s echoed %q, want the client address %s", c.name, v.hostAddr, got, v.clientIP)
			}
		}
	}

	in.must("destroy", natC.name)
	in.must("destroy", hostOnlyC.name)
	if after := hostState(t, in); after != before {
		t.Errorf("host network state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkCollisions checks that fixed addresses and forwarded host ports
// held by another container are refused with a clear error.
func TestNetworkCollisions(t *testing.T) {
	in := newInstance(t)
	tn := newTestNet(t, in)
	fixed := fmt.Sprintf("10.%d.1.50", tn.n)
	first := testutil.Name("fix")
	in.create(first, fmt.Sprintf(`{ network.ip = "%s"; network.forwardPorts = [ { hostPort = %d; } ]; configuration = { }; }`, fixed, 30000+tn.n))
	if got := in.addrs(first).IPv4; got != fixed {
		t.Errorf("fixed address: got %s, want %s", got, fixed)
	}
	cases := []struct{ config, want string }{
		{fmt.Sprintf(`{ network.ip = "%s"; configuration = { }; }`, fixed), fmt.Sprintf("network.ip %s is held by container %q", fixed, first)},
		{fmt.Sprintf(`{ network.forwardPorts = [ { hostPort = %d; containerPort = 81; } ]; configuration = { }; }`, 30000+tn.n), fmt.Sprintf("tcp port %d is forwarded to container %q", 30000+tn.n, first)},
		{`{ network.ip = "192.0.2.9"; configuration = { }; }`, "is not a usable address of the bridge's subnet"},
	}
	for _, c := range cases {
		name := testutil.Name("clash")
		r := in.run(append([]string{"create", name, nixFile(t, name+".nix", c.config)}, nixArgs...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("create with %s: %s; want %q", c.config, r, c.want)
		}
		if in.run("exists", name).code == 0 {
			t.Errorf("%s exists after the refused create", name)
		}
	}
	// UDP on the same port number is another port.
	in.create(testutil.Name("udp"), fmt.Sprintf(`{ network.forwardPorts = [ { protocol = "udp"; hostPort = %d; } ]; configuration = { }; }`, 30000+tn.n))
}

// TestNetworkSubnetInUse: two instances given one subnet (as two with the
// default subnets would be) do not break each other: the second to make
// its bridge is refused, naming the first's bridge and the settings to
// change, and leaves nothing; once the first's bridge is gone (it stays
// while a container of the first has an address there) it starts.
func TestNetworkSubnetInUse(t *testing.T) {
	a, b := newInstance(t), newInstance(t)
	b.env = a.env
	first, second := testutil.Name("sub"), testutil.Name("sub")
	a.create(first, labelled("a"))
	b.create(second, labelled("b"))
	a.must("start", first)
	bridge := "nch-" + a.store.ID
	r := b.run("start", second)
	if r.code != 1 || !strings.Contains(r.stderr, "overlaps") || !strings.Contains(r.stderr, bridge) || !strings.Contains(r.stderr, "NIXCELL_HOSTONLY_SUBNET") {
		t.Errorf("start in a second instance of the same subnet: %s; want a refusal naming %s", r, bridge)
	}
	if got := b.info(second).State; got != "stopped" {
		t.Errorf("after the refused start: %s", got)
	}
	if leaks := b.leaks(); len(leaks) > 0 {
		t.Errorf("the refused start left %v", leaks)
	}
	if got := a.label(first); got != "a" {
		t.Errorf("the first instance's container runs %q", got)
	}
	a.must("destroy", first)
	b.must("start", second)
	if got := b.label(second); got != "b" {
		t.Errorf("the second instance's container runs %q", got)
	}
	b.must("stop", second)
}

// TestNetworkModes checks the private veth pair, host network and macvlan
// modes.
func TestNetworkModes(t *testing.T) {
	in := newInstance(t)
	tn := newTestNet(t, in)
	// A veth end stands in for a host NIC (this kernel has no dummy links).
	dummy := fmt.Sprintf("ncmv%d", tn.n)
	run(t, "ip", "link", "add", dummy, "type", "veth", "peer", "name", dummy+"p")
	defer exec.Command("ip", "link", "del", dummy).Run()
	// A bridge of the host's own, for network.bridge.
	ownBridge, ownNet := fmt.Sprintf("ncbr%d", tn.n), fmt.Sprintf("10.%d.7", tn.n)
	run(t, "ip", "link", "add", ownBridge, "type", "bridge")
	defer exec.Command("ip", "link", "del", ownBridge).Run()
	run(t, "ip", "addr", "add", ownNet+".1/24", "dev", ownBridge)
	run(t, "ip", "link", "set", ownBridge, "up")
	before := hostState(t, in)

	veth := testutil.Name("veth")
	hostAddr, localAddr := fmt.Sprintf("10.%d.5.1", tn.n), fmt.Sprintf("10.%d.5.2", tn.n)
	in.create(veth, fmt.Sprintf(`{ network = { hostAddress = "%s"; localAddress = "%s"; macvlans = [ "%s" ]; };
  configuration = { name, ... }: { services.httpd.enable = true; services.httpd.text = "hello from ${name}\n"; }; }`, hostAddr, localAddr, dummy))
	in.must("start", veth)
	if got := in.addrs(veth).IPv4; got != localAddr {
		t.Errorf("show-ip of the veth container: %s, want %s", got, localAddr)
	}
	waitFor(t, 10*time.Second, "the veth container to answer", func() bool {
		body, _ := httpGet(t, "", join(localAddr, 80))
		return body == "hello from "+veth+"\n"
	})
	if r := in.run("exec", veth, "--", "ip", "route"); !strings.Contains(r.stdout, "default via "+hostAddr) {
		t.Errorf("routes in the veth container: %s", r)
	}
	if r := in.run("exec", veth, "--", "ip", "link", "show", "mv-"+dummy); r.code != 0 || !strings.Contains(r.stdout, "UP") {
		t.Errorf("macvlan in the container: %s", r)
	}

	onOwn := testutil.Name("ownbr")
	in.create(onOwn, fmt.Sprintf(`{ network = { bridge = "%s"; ip = "%s.2/24"; };
  configuration = { services.httpd.enable = true; services.httpd.text = "on the host's bridge\n"; }; }`, ownBridge, ownNet))
	in.must("start", onOwn)
	if got := in.addrs(onOwn).IPv4; got != ownNet+".2" {
		t.Errorf("show-ip on the host's bridge: %s", got)
	}
	waitFor(t, 10*time.Second, "the container on the host's bridge to answer", func() bool {
		body, _ := httpGet(t, "", join(ownNet+".2", 80))
		return body == "on the host's bridge\n"
	})
	bad := testutil.Name("ownbr")
	r := in.run(append([]string{"create", bad, nixFile(t, "bad.nix", fmt.Sprintf(`{ network.bridge = "%s"; configuration = { }; }`, ownBridge))}, nixArgs...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "set network.ip with its prefix length") {
		t.Errorf("network.bridge without network.ip: %s", r)
	}
	in.must("destroy", onOwn)

	v4only := testutil.Name("v4only")
	in.create(v4only, `{ network.enableIPv6 = false; configuration = { }; }`)
	in.must("start", v4only)
	if a := in.addrs(v4only); a.IPv4 == "" || a.IPv6 != "" {
		t.Errorf("enableIPv6 = false: %+v", a)
	}
	if r := in.run("exec", v4only, "--", "ip", "-6", "addr", "show", "scope", "global"); strings.Contains(r.stdout, "inet6") {
		t.Errorf("enableIPv6 = false, yet: %s", r.stdout)
	}
	in.must("destroy", v4only)

	hostNet := testutil.Name("hostnet")
	port := 18000 + tn.n
	in.create(hostNet, fmt.Sprintf(`{ network.hostNetwork = true; configuration = { services.httpd.enable = true; services.httpd.port = %d; services.httpd.text = "from the host network\n"; }; }`, port))
	in.must("start", hostNet)
	waitFor(t, 10*time.Second, "the host-network container to answer on the host's loopback", func() bool {
		body, _ := httpGet(t, "", join("127.0.0.1", port))
		return body == "from the host network\n"
	})
	if r := in.run("exec", hostNet, "--", "ip", "link", "show", tn.lanIf); r.code != 0 {
		t.Errorf("the host-network container does not see the host's interfaces: %s", r)
	}

	in.must("destroy", veth)
	in.must("destroy", hostNet)
	if after := hostState(t, in); after != before {
		t.Errorf("host network state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkDiedOnItsOwn checks that the rules and name of a container
// whose init exited by itself go at the next network change.
func TestNetworkDiedOnItsOwn(t *testing.T) {
	in := newInstance(t)
	brief, other := testutil.Name("brief"), testutil.Name("other")
	in.create(brief, `{ network.forwardPorts = [ { hostPort = 31999; containerPort = 80; } ]; configuration = { system.fixture.exitAfter = 1; }; }`)
	in.create(other, `{ }`)
	in.must("start", brief)
	if out, err := exec.Command("getent", "hosts", brief).Output(); err != nil {
		t.Fatalf("%s does not resolve while it runs: %v %s", brief, err, out)
	}
	waitFor(t, 20*time.Second, brief+" to exit on its own", func() bool { return in.run("state", brief).code == 3 })
	in.must("start", other) // any network change prunes what died
	if out, err := exec.Command("getent", "hosts", brief).Output(); err == nil {
		t.Errorf("%s still resolves after its init exited: %s", brief, out)
	}
	if rules := run(t, "nft", "list", "table", "inet", "nixcell-"+in.store.ID); strings.Contains(rules, brief) {
		t.Errorf("rules of %s remain after its init exited:\n%s", brief, rules)
	}
}

// TestClockStep: setting the host's clock (an NTP step, a resumed VM)
// moves the kernel's boot time, from which the start times recorded with
// the inits' PIDs are made. A running container must stay running to
// every later command: doctor finds nothing wrong, another start keeps its
// run record, rules and name, and it stops cleanly.
func TestClockStep(t *testing.T) {
	in := newInstance(t)
	running, other := testutil.Name("clk"), testutil.Name("clk")
	in.create(running, labelled("running"))
	in.create(other, labelled("other"))
	in.must("start", running)
	step := func(d time.Duration) {
		t.Helper()
		now := time.Now().Add(d)
		ts := unix.NsecToTimespec(now.UnixNano())
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			t.Fatalf("setting the clock: %v", err)
		}
	}
	step(7 * time.Second)
	t.Cleanup(func() { step(-7 * time.Second) })
	if r := in.run("doctor"); r.code != 0 {
		t.Errorf("doctor after the clock was set: %s", r)
	}
	in.must("start", other)
	if out, err := exec.Command("getent", "hosts", running).Output(); err != nil {
		t.Errorf("%s no longer resolves after another start: %v %s", running, err, out)
	}
	if out := in.must("network", "status"); !strings.Contains(out, "2 with their network up") {
		t.Errorf("after another start, network status says\n%s\nwant both containers' networks up", out)
	}
	if got := in.info(running).State; got != "running" {
		t.Errorf("%s is %s", running, got)
	}
	in.must("stop", running)
	in.must("stop", other)
	if r := in.run("doctor"); r.code != 0 {
		t.Errorf("doctor after the stops: %s", r)
	}
}
