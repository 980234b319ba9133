package cli

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/fault"
)

// networkEnv lists the environment variables that shape an instance's
// network, the only place nixcell reads them: NIXCELL_HOSTONLY_SUBNET,
// NIXCELL_NAT_SUBNET, NIXCELL_ULA_PREFIX and NIXCELL_NAT_IPV6_PREFIX apply
// when an instance first creates a container; NIXCELL_UPLINK and
// NIXCELL_HOSTS_FILE at every change.
func networkEnv() (cell.NetworkConfig, error) {
	cfg := cell.NetworkConfig{Uplink: os.Getenv("NIXCELL_UPLINK"), HostsFile: os.Getenv("NIXCELL_HOSTS_FILE")}
	for _, v := range []struct {
		name string
		dst  *netip.Prefix
	}{
		{"NIXCELL_HOSTONLY_SUBNET", &cfg.HostOnlySubnet},
		{"NIXCELL_NAT_SUBNET", &cfg.NATSubnet},
		{"NIXCELL_ULA_PREFIX", &cfg.ULAPrefix},
		{"NIXCELL_NAT_IPV6_PREFIX", &cfg.NATIPv6Prefix},
	} {
		s := os.Getenv(v.name)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return cfg, fmt.Errorf("%w: %s %q is not an address prefix such as 10.101.0.0/16", fault.Invalid, v.name, s)
		}
		*v.dst = p
	}
	return cfg, nil
}
