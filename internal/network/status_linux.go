package network

import (
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// BridgeStatus is what the kernel says of a managed bridge.
type BridgeStatus struct {
	Name      string   `json:"name"`
	Subnets   []string `json:"subnets"` // the instance's settings: its containers' subnets
	Exists    bool     `json:"exists"`
	Up        bool     `json:"up"`
	Addresses []string `json:"addresses"`
	Ports     int      `json:"ports"`   // container interfaces attached
	Missing   []string `json:"missing"` // addresses it should have but lacks
}

// Status reports the instance's network as the kernel has it.
type Status struct {
	Bridges       []BridgeStatus `json:"bridges"`
	Table         string         `json:"table"`
	TablesPresent bool           `json:"tablesPresent"`
	Uplink        string         `json:"uplink"`
	IPv4Forward   bool           `json:"ipv4Forwarding"`
}

// ReadStatus inspects the bridges and tables of the settings s; uplink is
// the configured one ("" finds it).
func ReadStatus(s Settings, uplink string) Status {
	if uplink == "" {
		uplink = DefaultUplink()
	}
	st := Status{Table: s.Table, TablesPresent: tablesExist(s.Table), Uplink: uplink}
	if v, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(v)) == "1" {
		st.IPv4Forward = true
	}
	hostOnly, nat := s.Bridges()
	for _, b := range []Bridge{hostOnly, nat} {
		bs := BridgeStatus{Name: b.Name, Subnets: []string{b.IPv4.Masked().String(), b.IPv6.Masked().String()}, Addresses: []string{}, Missing: []string{}}
		link, err := netlink.LinkByName(b.Name)
		if err == nil {
			bs.Exists = true
			bs.Up = link.Attrs().Flags&net.FlagUp != 0
			have := map[string]bool{}
			if addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL); err == nil {
				for _, a := range addrs {
					if a.IP.IsLinkLocalUnicast() {
						continue
					}
					bs.Addresses = append(bs.Addresses, a.IPNet.String())
					have[a.IPNet.String()] = true
				}
			}
			for _, want := range []netip.Prefix{b.IPv4, b.IPv6} {
				if !have[want.String()] {
					bs.Missing = append(bs.Missing, want.String())
				}
			}
			if links, err := netlink.LinkList(); err == nil {
				for _, l := range links {
					if l.Attrs().MasterIndex == link.Attrs().Index {
						bs.Ports++
					}
				}
			}
		}
		st.Bridges = append(st.Bridges, bs)
	}
	return st
}
