package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/testutil"
)

// nftTables lists nixcell's two tables of that name as nft has them ("" for
// a missing one).
func nftTables(ns *testNS, table string) string {
	var out strings.Builder
	for _, fam := range []string{"inet", "bridge"} {
		if strings.Contains(ns.cmd("nft", "list", "tables", fam), "table "+fam+" "+table+"\n") {
			out.WriteString(ns.cmd("nft", "list", "table", fam, table))
		}
	}
	return out.String()
}

// TestFirewallInKernel loads the ruleset of each kind of network into a
// fresh namespace's nftables and reads it back: nft takes every rule.
func TestFirewallInKernel(t *testing.T) {
	testutil.RequiresCommands(t, "nft")
	ns := newTestNS(t)
	s := testSettings(t)
	routed := testConfig
	routed.NAT6 = netip.MustParsePrefix("2001:db8:1:2::/64")
	r, err := NewSettings("abc", routed)
	if err != nil {
		t.Fatal(err)
	}
	fwd := []spec.PortForward{
		{Protocol: "tcp", HostPort: 8080, ContainerPort: 80},
		{Protocol: "udp", HostPort: 5353, ContainerPort: 53, HostAddress: netip.MustParseAddr("192.0.2.1")},
		{Protocol: "tcp", HostPort: 8443, ContainerPort: 443, HostAddress: netip.MustParseAddr("2001:db8::1")},
	}
	veth := spec.Network{HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32"), ForwardPorts: fwd[:1]}
	for _, c := range []struct {
		name string
		d    Desired
		want []string
	}{
		{"host-only with forwards", desiredFor(t, s, "eth9", map[string]spec.Network{"web": {AllowPeers: true, ForwardPorts: fwd}, "db": {AllowPeers: true}}), []string{
			`fib daddr type local tcp dport 8080 dnat ip to 10.50.0.3:80 comment "web"`,
			`ip daddr 192.0.2.1 udp dport 5353 dnat ip to 10.50.0.3:53 comment "web"`,
			`ip6 daddr 2001:db8::1 tcp dport 8443 dnat ip6 to [fd12:3456:789a:1::3]:443 comment "web"`,
			`comment "allowPeers on both"`, `comment "containers are isolated"`,
		}},
		{"NAT, masqueraded IPv6", desiredFor(t, s, "", map[string]spec.Network{"out": {EnableNat: true}}), []string{
			`oifname != "ncn-abc" ip saddr 10.60.0.0/24 masquerade comment "NAT bridge"`,
			`oifname != "ncn-abc" ip6 saddr fd12:3456:789a:2::/64 masquerade comment "NAT bridge"`,
		}},
		{"NAT, routed IPv6", desiredFor(t, r, "eth9", map[string]spec.Network{"out": {EnableNat: true}}), []string{
			`oifname "eth9" ip saddr 10.60.0.0/24 masquerade comment "NAT bridge"`,
		}},
		{"private veth", desiredFor(t, s, "", map[string]spec.Network{"pv": veth}), []string{
			`fib daddr type local tcp dport 8080 dnat ip to 10.9.0.2:80 comment "pv"`,
		}},
		{"no container running", Desired{Settings: s, KeepHostOnly: true}, []string{
			`iifname "nch-abc" oifname "nch-abc" accept`,
		}},
	} {
		script := c.d.Render()
		ns.do(func() error { _, err := syncRules(s.Table, script, ""); return err })
		got := nftTables(ns, s.Table)
		for _, want := range c.want {
			if !strings.Contains(got, want) {
				t.Errorf("%s: nft lacks %q:\n%s", c.name, want, got)
			}
		}
		// Every rule carries a comment: as many as rendered are loaded.
		if w, g := strings.Count(script, " comment "), strings.Count(got, " comment "); w != g {
			t.Errorf("%s: %d rules rendered, %d loaded:\n%s", c.name, w, g, got)
		}
		if strings.Contains(script, "ip6 saddr") != strings.Contains(got, "ip6 saddr") {
			t.Errorf("%s: IPv6 masquerading differs:\n%s", c.name, got)
		}
	}
}

// TestFirewallConverges applies a ruleset, keeps it when it is unchanged,
// restores it when it was deleted, replaces and deletes it, and leaves the
// tables of another instance as they were throughout.
func TestFirewallConverges(t *testing.T) {
	testutil.RequiresCommands(t, "nft")
	ns := newTestNS(t)
	s := testSettings(t)
	other, err := NewSettings("def", testConfig)
	if err != nil {
		t.Fatal(err)
	}
	web := map[string]spec.Network{"web": {ForwardPorts: []spec.PortForward{{Protocol: "tcp", HostPort: 8080, ContainerPort: 80}}}}
	theirScript := desiredFor(t, other, "", web).Render()
	ns.do(func() error { _, err := syncRules(other.Table, theirScript, ""); return err })
	theirs := nftTables(ns, other.Table)
	if !strings.Contains(theirs, "table inet nixcell-def") || !strings.Contains(theirs, "table bridge nixcell-def") {
		t.Fatalf("the other instance's tables:\n%s", theirs)
	}
	sync := func(script, last string) (digest string) {
		t.Helper()
		ns.do(func() (err error) { digest, err = syncRules(s.Table, script, last); return err })
		if got := nftTables(ns, other.Table); got != theirs {
			t.Errorf("the other instance's tables changed:\n%s\nwere:\n%s", got, theirs)
		}
		return digest
	}
	// A marker chain added behind nixcell's back tells whether nft ran:
	// loading the ruleset replaces the tables and drops it.
	mark := func() { ns.cmd("nft", "add", "chain", "inet", s.Table, "marker") }
	marked := func() bool { return strings.Contains(nftTables(ns, s.Table), "chain marker") }

	script := desiredFor(t, s, "", web).Render()
	digest := sync(script, "")
	if !strings.Contains(nftTables(ns, s.Table), `dnat ip to 10.50.0.2:80 comment "web"`) {
		t.Fatalf("our tables:\n%s", nftTables(ns, s.Table))
	}
	mark()
	if again := sync(script, digest); again != digest || !marked() {
		t.Errorf("an unchanged ruleset was loaded again (digest %s, was %s)", again, digest)
	}
	if sync(script, "") != digest || marked() {
		t.Error("a ruleset whose last digest is unknown was not loaded")
	}
	// Deleted behind nixcell's back (a host that lost its state): loaded
	// again though unchanged.
	ns.cmd("nft", "delete", "table", "inet", s.Table)
	sync(script, digest)
	if !strings.Contains(nftTables(ns, s.Table), "table inet nixcell-abc") {
		t.Error("deleted tables were not restored")
	}
	mark()
	changed := desiredFor(t, s, "", map[string]spec.Network{"web": {}}).Render()
	if d := sync(changed, digest); d == digest || marked() || strings.Contains(nftTables(ns, s.Table), "dport 8080") {
		t.Errorf("a changed ruleset was not loaded:\n%s", nftTables(ns, s.Table))
	}
	empty := sync("", digest)
	if got := nftTables(ns, s.Table); got != "" {
		t.Errorf("an empty ruleset left our tables:\n%s", got)
	}
	var present bool
	ns.do(func() error { present = tablesExist(s.Table); return nil })
	if present {
		t.Error("tablesExist after the tables were deleted")
	}
	if sync("", empty) != empty {
		t.Error("the empty ruleset's digest changed")
	}
}
