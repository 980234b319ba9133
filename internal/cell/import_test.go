package cell

import (
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

// TestHostAccess: every setting that reaches into the importing host is
// named, and a container that keeps to itself has none.
func TestHostAccess(t *testing.T) {
	if got := hostAccess(spec.Spec{Network: spec.Network{EnableNat: true}, Tmpfs: []string{"/tmp"}}); len(got) != 0 {
		t.Errorf("a self-contained container reaches into the host: %v", got)
	}
	s := spec.Spec{
		Privileged:     true,
		BindMounts:     []spec.BindMount{{Destination: "/data", HostPath: "/srv/data", IsReadOnly: true}},
		AllowedDevices: []spec.Device{{Node: "/dev/fuse", Modifier: "rw"}},
		Network:        spec.Network{HostNetwork: true, Bridge: "br0", Macvlans: []string{"eth0"}},
	}
	got := strings.Join(hostAccess(s), "; ")
	for _, want := range []string{"privileged", "read-only bind mount of the host's /srv/data at /data", "/dev/fuse", "hostNetwork", "bridge br0", "macvlan on the host's eth0"} {
		if !strings.Contains(got, want) {
			t.Errorf("hostAccess does not name %q: %s", want, got)
		}
	}
}
