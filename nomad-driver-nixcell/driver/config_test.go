package driver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

func TestContainerName(t *testing.T) {
	alloc := "0c4a1b2e-1111-2222-3333-444455556666"
	seen := map[string]string{}
	for _, task := range []string{"web", "Web", "web_1", "web-1", "a--b", "a-b", "-x-", "___",
		"a-very-long-task-name-that-goes-on-and-on-beyond-what-fits-in-a-label"} {
		name := containerName(alloc, task)
		if err := spec.ValidateName(name); err != nil {
			t.Errorf("task %q: %v", task, err)
		}
		if other, ok := seen[name]; ok {
			t.Errorf("tasks %q and %q share the container name %s", other, task, name)
		}
		seen[name] = task
	}
	if got := containerName(alloc, "web"); got != "nomad-0c4a1b2e-web" {
		t.Errorf("containerName(web) = %s", got)
	}
}

func TestParseSignal(t *testing.T) {
	for _, c := range []struct {
		name    string
		forStop bool
		want    stopSignal
		bad     bool
	}{
		{"", true, stopSignal{nixcell: true}, false},
		{"SIGRTMIN+3", true, stopSignal{nixcell: true, num: 37}, false},
		{"SIGRTMIN+3", false, stopSignal{num: 37}, false},
		{"SIGTERM", true, stopSignal{num: 15}, false},
		{"term", false, stopSignal{num: 15}, false},
		{"SIGRTMIN", false, stopSignal{num: 34}, false},
		{"SIGNOPE", false, stopSignal{}, true},
		{"SIGRTMIN-1", false, stopSignal{}, true},
		{"SIGRTMIN+40", false, stopSignal{}, true},
		{"", false, stopSignal{}, true},
	} {
		got, err := parseSignal(c.name, c.forStop)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSignal(%q, %v) = %+v, %v", c.name, c.forStop, got, err)
		}
	}
}

// TestNetworkConfig: the driver's subnets default apart from the default
// instance's, take the plugin's options, and refuse what is not an IPv4
// subnet.
func TestNetworkConfig(t *testing.T) {
	n, err := Config{}.network()
	if err != nil || n.HostOnlySubnet.String() != DefaultHostOnlySubnet || n.NATSubnet.String() != DefaultNATSubnet {
		t.Errorf("defaults: %+v, %v", n, err)
	}
	if n.HostOnlySubnet.Overlaps(netip.MustParsePrefix("10.101.0.0/16")) || n.NATSubnet.Overlaps(netip.MustParsePrefix("10.102.0.0/16")) {
		t.Errorf("the driver's defaults %+v meet the default instance's", n)
	}
	n, err = Config{HostOnlySubnet: "10.242.7.0/24", NATSubnet: "10.243.7.0/24"}.network()
	if err != nil || n.HostOnlySubnet.String() != "10.242.7.0/24" || n.NATSubnet.String() != "10.243.7.0/24" {
		t.Errorf("options: %+v, %v", n, err)
	}
	for _, bad := range []Config{{HostOnlySubnet: "10.1.2.3"}, {NATSubnet: "fd00::/64"}, {HostOnlySubnet: "x"}} {
		if _, err := bad.network(); err == nil || !strings.Contains(err.Error(), "not an IPv4 subnet") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
