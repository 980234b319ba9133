package runtime

import (
	"slices"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

// TestMountsAreReserved keeps spec.ReservedMounts (which refuses user
// mounts that would hide the runtime's) and the runtime's own mount list
// from drifting apart: every mount the runtime makes for a container, of
// every kind, is reserved or one a user mount may replace.
func TestMountsAreReserved(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []*Container{
		{Name: "nixos", HostDir: dir, RootFS: dir, ConsoleLog: dir + "/console", IDs: IDRange{Start: 1 << 20, Size: 1 << 16},
			ProfileDir: dir, UserProfilesDir: dir, GCRootsDir: dir, DeviceDir: dir},
		{Name: "closure", HostDir: dir, RootFS: dir, ConsoleLog: dir + "/console", IDs: IDRange{Start: 1 << 20, Size: 1 << 16},
			ProfileDir: dir, UserProfilesDir: dir, GCRootsDir: dir, StorePaths: []string{}, DeviceDir: dir},
		{Name: "plain", HostDir: dir, RootFS: dir, PlainRoot: true, ConsoleLog: dir + "/console", DeviceDir: dir},
		{Name: "hostnet", HostDir: dir, RootFS: dir, HostNetwork: true, ConsoleLog: dir + "/console", IDs: IDRange{Start: 1 << 20, Size: 1 << 16}, DeviceDir: dir},
	} {
		cfg, _, err := c.config()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		for _, m := range cfg.Mounts {
			if !covered(m.Destination) {
				t.Errorf("%s: the runtime mounts %s, which spec.ReservedMounts does not reserve (nor spec.DefaultMounts list): user mounts there would hide it", c.Name, m.Destination)
			}
		}
	}
}

func covered(dest string) bool {
	if spec.IsReserved(dest) || slices.Contains(spec.DefaultMounts, dest) {
		return true
	}
	for _, r := range spec.ReservedMounts {
		if strings.HasPrefix(dest, r.Path+"/") {
			return true
		}
	}
	return false
}
