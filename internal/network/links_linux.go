package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureBridge creates the bridge if missing and makes sure it has its
// addresses, is up, and lets forwarded connections from the host's
// loopback leave through it. created tells whether it had to be made.
func ensureBridge(b Bridge) (created bool, err error) {
	link, err := netlink.LinkByName(b.Name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return false, err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("creating: %w", err)
		}
		if link, err = netlink.LinkByName(b.Name); err != nil {
			return false, err
		}
		created = true
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return false, fmt.Errorf("%s exists and is a %s, not a bridge; remove it or choose other subnets", b.Name, link.Type())
	}
	if created {
		if err := subnetFree(b, link.Attrs().Index); err != nil {
			_ = netlink.LinkDel(link)
			return false, err
		}
	}
	for _, p := range []netip.Prefix{b.IPv4, b.IPv6} {
		if err := addAddr(nil, link, p); err != nil {
			return created, err
		}
	}
	if err := sysctl("net/ipv4/conf/"+b.Name+"/route_localnet", "1"); err != nil {
		return created, err
	}
	return created, netlink.LinkSetUp(link)
}

// ErrSubnetInUse is the class of a bridge subnet that another interface of
// the host has addresses in.
var ErrSubnetInUse = fault.New(fault.Conflict, "subnet in use on the host")

// subnetFree checks that no interface of the host but the bridge (index
// self) has an address in the bridge's subnets. Two networks of one
// subnet on a host break each other's traffic (the routes of one hide
// the other's containers), as two nixcell instances with the default
// subnets would; the bridge is checked when it is made, so whichever
// came second is refused.
func subnetFree(b Bridge, self int) error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing the host's addresses: %w", err)
	}
	for _, a := range addrs {
		if a.LinkIndex == self || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		theirs := netip.PrefixFrom(ip.Unmap(), ones)
		for _, ours := range []netip.Prefix{b.IPv4, b.IPv6} {
			if !ours.IsValid() || !ours.Masked().Overlaps(theirs.Masked()) || theirs.Addr().IsLinkLocalUnicast() {
				continue
			}
			name := fmt.Sprintf("interface %d", a.LinkIndex)
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("%w: %s of bridge %s overlaps %s on %s (another nixcell instance's bridge, or another network): "+
				"choose other subnets for this instance (NIXCELL_HOSTONLY_SUBNET and NIXCELL_NAT_SUBNET, "+
				"or the NixOS module's networking options) or remove %s", ErrSubnetInUse, ours.Masked(), b.Name, theirs, name, name)
		}
	}
	return nil
}

// addAddr adds p to link unless it is there already; IPv6 addresses skip
// duplicate address detection so they work at once.
func addAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding address %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// Attach creates the container's interfaces and configures them inside
// the network namespace of pid (the container's init, which has not run
// the system's init yet), so services see their addresses at boot. On
// error, what it created is removed.
func Attach(pid int, p Plan) (retErr error) {
	defer func() {
		if retErr != nil {
			_ = Detach(p)
		}
	}()
	if p.HostNetwork {
		return nil
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("opening the network namespace of %d: %w", pid, err)
	}
	defer ns.Close()
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer inside.Close()
	for _, i := range p.Interfaces {
		if err := attach(inside, pid, i); err != nil {
			return fmt.Errorf("interface %s: %w", i.Name, err)
		}
	}
	for _, parent := range p.Macvlans {
		if err := attachMacvlan(inside, pid, parent); err != nil {
			return fmt.Errorf("macvlan on %s: %w", parent, err)
		}
	}
	if lo, err := inside.LinkByName("lo"); err == nil {
		_ = inside.LinkSetUp(lo)
	}
	return nil
}

// attachMacvlan gives the container a macvlan of the host interface
// parent, created right in its namespace.
func attachMacvlan(inside *netlink.Handle, pid int, parent string) error {
	host, err := netlink.LinkByName(parent)
	if err != nil {
		return fmt.Errorf("no host interface %s: %w", parent, err)
	}
	name := "mv-" + parent
	if len(name) > 15 {
		name = name[:15]
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: host.Attrs().Index, Namespace: netlink.NsPid(pid)},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := netlink.LinkAdd(mv); err != nil {
		return err
	}
	in, err := inside.LinkByName(name)
	if err != nil {
		return err
	}
	return inside.LinkSetUp(in)
}

func attach(inside *netlink.Handle, pid int, i Interface) error {
	_ = deleteLink(i.HostName) // left by an init that died
	// The peer is created right in the container's namespace, under its
	// final name: no move, no rename.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: i.HostName, MTU: 1500}, PeerName: i.Name, PeerNamespace: netlink.NsPid(pid)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", i.HostName, err)
	}
	host, err := netlink.LinkByName(i.HostName)
	if err != nil {
		return err
	}
	if i.Bridge != "" {
		br, err := netlink.LinkByName(i.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", i.Bridge, err)
		}
		if err := netlink.LinkSetMaster(host, br); err != nil {
			return err
		}
	} else {
		for _, a := range i.HostAddrs {
			if err := addAddr(nil, host, a); err != nil {
				return err
			}
		}
		if err := sysctl("net/ipv4/conf/"+i.HostName+"/route_localnet", "1"); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	// The routes to a private veth's container address.
	if i.Bridge == "" {
		for _, a := range i.Addrs {
			if !prefixesContain(i.HostAddrs, a.Addr()) {
				r := &netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: hostNet(a.Addr())}
				if err := netlink.RouteReplace(r); err != nil {
					return fmt.Errorf("route to %s: %w", a.Addr(), err)
				}
			}
		}
	}

	in, err := inside.LinkByName(i.Name)
	if err != nil {
		return err
	}
	for _, a := range i.Addrs {
		if err := addAddr(inside, in, a); err != nil {
			return err
		}
	}
	if err := inside.LinkSetUp(in); err != nil {
		return err
	}
	for _, gw := range []netip.Addr{i.Gateway4, i.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		if !prefixesContain(i.Addrs, gw) {
			onLink := &netlink.Route{LinkIndex: in.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: hostNet(gw)}
			if err := inside.RouteReplace(onLink); err != nil {
				return fmt.Errorf("route to %s: %w", gw, err)
			}
		}
		def := &netlink.Route{LinkIndex: in.Attrs().Index, Gw: gw.AsSlice()}
		if gw.Is6() {
			def.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		} else {
			def.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		}
		if err := inside.RouteReplace(def); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// Detach removes the host ends of the container's interfaces. The kernel
// removes them with the container's network namespace too, but not at
// once; removing them here makes stop and destroy leave `ip link` as it was
// when they return. It is idempotent.
func Detach(p Plan) error {
	var errs []error
	for _, i := range p.Interfaces {
		errs = append(errs, deleteLink(i.HostName))
	}
	return errors.Join(errs...)
}

// DetachContainer removes the host ends of every interface a container of
// that name can have, whatever its settings were; it is idempotent.
func (s Settings) DetachContainer(name string) error {
	return errors.Join(deleteLink(HostIfName(s.Table, name, mainIface)), deleteLink(HostIfName(s.Table, name, natIface)))
}

// enableForwarding makes the host route between its uplink and the
// containers, IPv4 and IPv6. This is host-wide and is not undone: other
// software may rely on it too.
func enableForwarding() error {
	if err := sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	return enableIPv6Forwarding()
}

// enableIPv6Forwarding turns on IPv6 forwarding without making the host
// stop accepting router advertisements on interfaces that use them
// (forwarding=1 otherwise disables accept_ra=1).
func enableIPv6Forwarding() error {
	if v, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); strings.TrimSpace(string(v)) == "1" {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		p := "net/ipv6/conf/" + l.Attrs().Name + "/accept_ra"
		if v, err := os.ReadFile("/proc/sys/" + p); err == nil && strings.TrimSpace(string(v)) == "1" {
			_ = sysctl(p, "2")
		}
	}
	return sysctl("net/ipv6/conf/all/forwarding", "1")
}

func sysctl(path, value string) error {
	if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s: %w", strings.ReplaceAll(path, "/", "."), err)
	}
	return nil
}

// DefaultUplink is the interface of the host's IPv4 default route, "" if
// there is none.
func DefaultUplink() string {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && len(r.Dst.Mask) > 0 && r.Dst.Mask[0] == 0 {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

// ContainerLinks lists the host ends of container interfaces of the
// instance with settings s that the kernel has.
func ContainerLinks(s Settings) []string {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	prefix := portPrefix(s.Table)
	var out []string
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

// IsLinkOf tells whether link is the host end of one of container's
// interfaces.
func IsLinkOf(s Settings, link, container string) bool {
	return link == HostIfName(s.Table, container, mainIface) || link == HostIfName(s.Table, container, natIface)
}

// DeleteLink removes a host interface; one that is gone is no error.
func DeleteLink(name string) error { return deleteLink(name) }
