package network

import (
	"fmt"
	"sort"
	"strings"
)

func quote(s string) string { return `"` + s + `"` }

// Render returns the nft script that replaces nixcell's tables with the
// desired rules, as one transaction ("" when no rule is needed: the tables
// are then only deleted). Every rule carries a comment naming its
// container, so `nft list table inet nixcell` reads as a list of what each
// container asked for.
func (d Desired) Render() string {
	s := d.Settings
	hostOnly, nat := s.Bridges()
	useHostOnly, useNAT := d.bridgesInUse()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	var forwards []string
	containers := append([]Planned(nil), d.Containers...)
	sort.Slice(containers, func(i, j int) bool { return containers[i].Name < containers[j].Name })
	for _, c := range containers {
		for _, f := range c.Network.ForwardPorts {
			for _, v6 := range []bool{false, true} {
				to := c.forwardTarget(v6)
				if !to.IsValid() || f.HostAddress.IsValid() && f.HostAddress.Is6() != v6 {
					continue
				}
				fam, dst := "ip", fmt.Sprintf("%s:%d", to, f.ContainerPort)
				if v6 {
					fam, dst = "ip6", fmt.Sprintf("[%s]:%d", to, f.ContainerPort)
				}
				match := "fib daddr type local"
				if f.HostAddress.IsValid() {
					match = fmt.Sprintf("%s daddr %s", fam, f.HostAddress)
				}
				forwards = append(forwards, fmt.Sprintf("%s %s dport %d dnat %s to %s comment %s",
					match, f.Protocol, f.HostPort, fam, dst, quote(c.Name)))
			}
		}
	}
	if !useHostOnly && !useNAT && len(forwards) == 0 {
		return ""
	}

	w("table inet %s {", s.Table)
	w("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;")
	for _, f := range forwards {
		w("\t\t%s", f)
	}
	w("\t}")
	// Connections the host itself opens to a forwarded port, 127.0.0.1
	// included: DNAT in output; the source of loopback ones is rewritten
	// below, since 127.0.0.1 cannot leave the host.
	w("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;")
	for _, f := range forwards {
		w("\t\t%s", f)
	}
	w("\t}")
	w("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;")
	w("\t\tip saddr 127.0.0.0/8 ct status dnat masquerade comment %s", quote("forwards from the host's loopback"))
	if useNAT {
		out := "oifname != " + quote(nat.Name)
		if d.Uplink != "" {
			out = "oifname " + quote(d.Uplink)
		}
		w("\t\t%s ip saddr %s masquerade comment %s", out, s.NAT, quote("NAT bridge"))
		if !s.NAT6.IsValid() { // a routable prefix is routed, not masqueraded
			w("\t\t%s ip6 saddr %s masquerade comment %s", out, s.ula64(2), quote("NAT bridge"))
		}
	}
	w("\t}")
	// The host-only bridge takes in no routed connection but forwarded
	// ports, and lets none of its containers' own connections out beyond
	// the host: their default routes lead to the host only so that replies
	// to forwarded ports reach their clients. A connection out is refused
	// with an ICMP error, so it fails at once instead of timing out. The
	// NAT bridge only answers.
	w("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tct state established,related accept")
	w("\t\tct status dnat accept comment %s", quote("forwarded ports"))
	for _, br := range []Bridge{hostOnly, nat} {
		// Frames bridged between two ports reach this chain too when the
		// host has br_netfilter on; the bridge table decides about them.
		w("\t\tiifname %s oifname %s accept comment %s", quote(br.Name), quote(br.Name), quote("bridged, see table bridge"))
	}
	if useHostOnly {
		w("\t\tiifname %s reject with icmpx admin-prohibited comment %s", quote(hostOnly.Name), quote("host-only: nothing out beyond the host"))
		w("\t\toifname %s drop comment %s", quote(hostOnly.Name), quote("host-only: no route in"))
	}
	if useNAT {
		w("\t\tiifname %s accept comment %s", quote(nat.Name), quote("NAT bridge: out"))
		w("\t\toifname %s drop comment %s", quote(nat.Name), quote("NAT bridge: nothing unsolicited in"))
	}
	w("\t}")
	w("}")

	// Containers on one bridge talk to each other only when both allow it.
	// Frames between two ports of a bridge never reach the inet family,
	// hence a table of the bridge family with the same name.
	if useHostOnly || useNAT {
		var open []string
		for _, c := range containers {
			for _, i := range c.Plan.Interfaces {
				if i.Bridge != "" && c.Network.AllowPeers {
					open = append(open, quote(i.HostName))
				}
			}
		}
		w("table bridge %s {", s.Table)
		w("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;")
		if len(open) > 0 {
			set := "{ " + strings.Join(open, ", ") + " }"
			w("\t\tiifname %s oifname %s accept comment %s", set, set, quote("allowPeers on both"))
		}
		ports := quote(portPrefix(s.Table) + "*")
		w("\t\tiifname %s oifname %s drop comment %s", ports, ports, quote("containers are isolated"))
		w("\t}")
		w("}")
	}
	return b.String()
}
