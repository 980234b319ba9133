package network

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/testutil"
)

// FuzzNetworkState: Store.Load of any network.json gives an error or a
// state the commands can use: addresses allocate inside their subnets and
// apart from every other container's, the host's rules and hosts file
// render, and the state saves as it was read. The file is written where
// the store reads it, in a directory the fuzz target's executions share
// (each worker runs them one at a time).
func FuzzNetworkState(f *testing.F) {
	good := `{"settings": {"hostOnly": "10.50.0.0/29", "nat": "10.60.0.0/24", "ula": "fd12:3456:789a::/48",
		"bridgeHostOnly": "nch-abc", "bridgeNat": "ncn-abc", "table": "nixcell-abc"},
	  "addresses": {"db": {"hostOnly4": "10.50.0.2", "hostOnly6": "fd12:3456:789a:1::2", "nat4": "10.60.0.2"}},
	  "ports": {"db": [{"protocol": "tcp", "hostPort": 5432, "containerPort": 5432}]}, "applied": "abc"}`
	for _, s := range []string{
		good,
		`{"settings": {"hostOnly": "10.50.0.0/29", "nat": "10.60.0.0/24", "ula": "fd12:3456:789a::/48", "nat6": "2001:db8:1:2::/64",
		  "bridgeHostOnly": "nch-abc", "bridgeNat": "ncn-abc", "table": "nixcell-abc"}, "addresses": null}`,
		strings.Replace(good, `"10.50.0.0/29"`, `"fd00::/64"`, 1),
		strings.Replace(good, `"nixcell-abc"`, `"x { }; flush ruleset; table inet y"`, 1),
		strings.Replace(good, `"10.60.0.0/24"`, `"10.50.0.0/24"`, 1),
		strings.Replace(good, `"fd12:3456:789a::/48"`, `"10.0.0.0/8"`, 1),
		`{"settings": {}}`, `{}`, `null`, ``, `{"settings": `, `[]`,
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "network.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Store{Path: path, ID: "abc"}.Load()
		if err != nil {
			if !strings.Contains(err.Error(), "network state") {
				t.Fatalf("the error does not say which file: %v", err)
			}
			return
		}
		if st.Addresses == nil {
			t.Fatal("Load gave a nil address table, which no create can add to")
		}
		if first, second := testutil.Reencoded(t, st); !bytes.Equal(first, second) {
			t.Fatalf("the state %s is saved as\n%s\nand then as\n%s", data, first, second)
		}
		var members []Member
		for _, n := range []spec.Network{
			{},
			{EnableNat: true},
			{NoIPv6: true, AllowPeers: true},
			{IP: netip.MustParsePrefix("10.50.0.3/32"), EnableNat: true,
				ForwardPorts: []spec.PortForward{{Protocol: "tcp", HostPort: 8080, ContainerPort: 80}}},
		} {
			a, err := st.Settings.Allocate("fuzz", n, st.Addresses["fuzz"], st.Addresses)
			if err != nil {
				continue
			}
			checkAllocation(t, st, n, a)
			st.Addresses["fuzz"] = a
			members = []Member{{Name: "fuzz", Network: n}}
			if err := st.ClaimPorts("fuzz", n.ForwardPorts); err != nil && !errors.Is(err, ErrPortInUse) {
				t.Fatalf("claiming ports: %v", err)
			}
		}
		for name := range st.Addresses {
			members = append(members, Member{Name: name})
		}
		d := st.Desired(members, Host{Uplink: "eth0"})
		script := d.Render()
		if script != "" && !strings.HasPrefix(script, "table inet "+st.Settings.Table+" {\n") {
			t.Fatalf("the rules do not start with their table:\n%s", script)
		}
		_ = d.hostsBlock()
	})
}

// checkAllocation checks that a lies in the bridges' subnets, on none of
// their own or reserved addresses, and apart from every other container's.
func checkAllocation(t *testing.T, st State, n spec.Network, a Addresses) {
	t.Helper()
	s := st.Settings
	hostOnly, nat := s.Bridges()
	in := func(what string, x netip.Addr, subnet netip.Prefix, gateway netip.Addr) {
		if !x.IsValid() {
			return
		}
		if !subnet.Contains(x) || x == gateway || x == subnet.Masked().Addr() || x == lastAddr(subnet) {
			t.Fatalf("%s %s is not a usable address of %s (gateway %s); settings %+v", what, x, subnet, gateway, s)
		}
		for other, b := range st.Addresses {
			if other != "fuzz" && (b.HostOnly4 == x || b.HostOnly6 == x || b.NAT4 == x || b.NAT6 == x) {
				t.Fatalf("%s %s is held by %q too", what, x, other)
			}
		}
	}
	in("host-only IPv4", a.HostOnly4, s.HostOnly, hostOnly.IPv4.Addr())
	in("host-only IPv6", a.HostOnly6, s.ula64(1), hostOnly.IPv6.Addr())
	in("NAT IPv4", a.NAT4, s.NAT, nat.IPv4.Addr())
	in("NAT IPv6", a.NAT6, s.natSubnet6(), nat.IPv6.Addr())
	if !a.HostOnly4.IsValid() || n.NoIPv6 != !a.HostOnly6.IsValid() || n.EnableNat != a.NAT4.IsValid() {
		t.Fatalf("allocated %+v for %+v", a, n)
	}
}
