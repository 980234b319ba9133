package network

import (
	"strings"

	"github.com/vishvananda/netlink"
)

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
