package spec

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	// Names of nixcell's own files and of cgroup files are container names
	// like any other (see state's CgroupLeaf).
	good := []string{"a", "web", "web-1", "a1b2", strings.Repeat("a", MaxNameLen), "global", "tasks", "containers", "host", "locks"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                                "empty",
		strings.Repeat("a", MaxNameLen+1): "longer than",
		"Web":                             "lower-case letter",
		"1web":                            "lower-case letter",
		"-web":                            "lower-case letter",
		"web-":                            "must not end",
		"we_b":                            "is not allowed",
		"../etc":                          "lower-case letter",
		"a/../b":                          "is not allowed",
		"a.b":                             "is not allowed",
		"a b":                             "is not allowed",
		"wéb":                             "is not allowed",
		"localhost":                       "names the host itself",
	}
	for n, want := range bad {
		err := ValidateName(n)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName containing %q", n, err, want)
		}
	}
}

func TestParseFull(t *testing.T) {
	s, err := Parse([]byte(`{
		"autostart": true,
		"network": {"bridge": "br0", "ip": "10.101.0.5", "ip6": "fd00::5/64", "enableNat": true,
			"forwardPorts": [{"protocol": "udp", "hostPort": 53}, {"hostPort": 8080, "containerPort": 80, "hostAddress": "127.0.0.1"}]},
		"bindMounts": {"/data": {"hostPath": "/srv/data", "isReadOnly": false, "create": true}, "/etc/ro": {},
			"/shared": {"hostPath": "/srv/shared", "isReadOnly": false, "writeAsHostRoot": true}},
		"tmpfs": ["/var/cache", "/srv/scratch"],
		"limits": {"memory": "512M", "cpus": 1.5, "pids": 2000},
		"ephemeral": true,
		"store": "closure",
		"allowedDevices": [{"node": "/dev/net/tun", "modifier": "rw"}],
		"initArgs": ["systemd.unit=rescue.target", "systemd.log_level=debug"],
		"consoleLogSize": "8M"
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Autostart: true,
		Network: Network{
			Bridge: "br0", IP: netip.MustParsePrefix("10.101.0.5/32"), IP6: netip.MustParsePrefix("fd00::5/64"), EnableNat: true,
			ForwardPorts: []PortForward{
				{Protocol: "udp", HostPort: 53, ContainerPort: 53},
				{Protocol: "tcp", HostPort: 8080, ContainerPort: 80, HostAddress: netip.MustParseAddr("127.0.0.1")},
			},
		},
		BindMounts: []BindMount{
			{Destination: "/data", HostPath: "/srv/data", IsReadOnly: false, Create: true},
			{Destination: "/etc/ro", HostPath: "/etc/ro", IsReadOnly: true},
			{Destination: "/shared", HostPath: "/srv/shared", WriteAsHostRoot: true},
		},
		Tmpfs:          []string{"/srv/scratch", "/var/cache"},
		Limits:         Limits{MemoryBytes: 512 << 20, CPUs: 1.5, Pids: 2000},
		Ephemeral:      true,
		Store:          "closure",
		AllowedDevices: []Device{{Node: "/dev/net/tun", Modifier: "rw"}},
		InitArgs:       []string{"systemd.unit=rescue.target", "systemd.log_level=debug"},
		ConsoleLogSize: 8 << 20,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", s, want)
	}
}

func TestParseEmptyAndNull(t *testing.T) {
	for _, in := range []string{`{}`, `{"autostart": null, "network": {"ip": null}}`} {
		s, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%s): %v", in, err)
		}
		if !reflect.DeepEqual(s, Spec{}) {
			t.Errorf("Parse(%s) = %+v, want the defaults", in, s)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		`[]`:                                                   "must be an attribute set",
		`{"autostrat": true}`:                                  "autostrat: unknown attribute",
		`{"autostart": "yes"}`:                                 "autostart: must be true or false",
		`{"initArgs": "systemd.unit=x"}`:                       "initArgs: must be a list",
		`{"initArgs": [""]}`:                                   "initArgs[0]: must be a non-empty argument",
		`{"consoleLogSize": "64K"}`:                            "consoleLogSize: must be at least 128K",
		`{"network": {"ip": "10.1.2"}}`:                        `network.ip: "10.1.2" is not an IP address`,
		`{"network": {"ip": "fd00::1"}}`:                       "is not an IPv4 address",
		`{"network": {"ip6": "10.0.0.1"}}`:                     "is not an IPv6 address",
		`{"network": {"bridge": "a/b"}}`:                       "not a valid interface name",
		`{"network": {"forwardPorts": [{}]}}`:                  "hostPort: is required",
		`{"network": {"forwardPorts": [{"hostPort": 70000}]}}`: "port number from 1 to 65535",
		`{"network": {"forwardPorts": [{"hostPort": 80, "protocol": "sctp"}]}}`:                    `"tcp" or "udp"`,
		`{"network": {"forwardPorts": [{"hostPort": 80}, {"hostPort": 80, "containerPort": 81}]}}`: "forwarded twice",
		`{"network": {"hostNetwork": true, "enableNat": true}}`:                                    "cannot be combined",
		`{"network": {"hostAddress": "10.0.0.1"}}`:                                                 "must be set together",
		`{"bindMounts": {"data": {}}}`:                                                             "absolute, clean path",
		`{"bindMounts": {"/data": {"hostPath": "/a/../b"}}}`:                                       "absolute, clean path",
		`{"bindMounts": {"/data": {"hostpath": "/a"}}}`:                                            "unknown attribute",
		`{"bindMounts": {"/data": {"writeAsHostRoot": true}}}`:                                     "applies to a read-write mount",
		`{"bindMounts": {"/": {"hostPath": "/srv"}}}`:                                              "cannot mount over the root",
		`{"bindMounts": {"/run": {}}}`:                                                             "/run is mounted by nixcell itself",
		`{"bindMounts": {"/proc/x": {}}}`:                                                          "/proc/x is mounted by nixcell itself",
		`{"tmpfs": "/var/cache"}`:                                                                  "tmpfs: must be a list",
		`{"tmpfs": [1]}`:                                                                           "tmpfs[0]: must be a string",
		`{"tmpfs": ["var/cache"]}`:                                                                 "absolute, clean path",
		`{"tmpfs": ["/a", "/a"]}`:                                                                  `"/a" is listed twice`,
		`{"tmpfs": ["/dev"]}`:                                                                      "mounted by nixcell itself",
		`{"tmpfs": ["/data"], "bindMounts": {"/data": {}}}`:                                        "both a bind mount and a tmpfs",
		`{"limits": {"memory": "lots"}}`:                                                           `"lots" is not a size`,
		`{"limits": {"cpus": 0}}`:                                                                  "positive number of CPUs",
		`{"limits": {"pids": 1.5}}`:                                                                "positive whole number",
		`{"store": "some"}`:                                                                        `"full" or "closure"`,
		`{"allowedDevices": [{"node": "/etc/x", "modifier": "r"}]}`:                                "path under /dev",
		`{"allowedDevices": [{"node": "/dev/x", "modifier": "rwx"}]}`:                              "made of r, w and m",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want ErrInvalidSpec containing %q", in, err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := map[string]uint64{"4096": 4096, "512M": 512 << 20, "2G": 2 << 30, "1.5GiB": 3 << 29, "64k": 64 << 10, "1T": 1 << 40}
	for in, want := range cases {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "0", "12X", "1e400"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded, want error", in)
		}
	}
}

func TestLimitOverrides(t *testing.T) {
	mem, cpus, pids := uint64(64<<20), 0.5, int64(0)
	base := Limits{MemoryBytes: 1 << 30, CPUs: 2, Pids: 100}
	o := LimitOverrides{MemoryBytes: &mem}.Merge(LimitOverrides{CPUs: &cpus})
	got := base.With(o)
	if want := (Limits{MemoryBytes: 64 << 20, CPUs: 0.5, Pids: 100}); got != want {
		t.Errorf("With = %+v, want %+v", got, want)
	}
	// A later override replaces an earlier one; zero means unlimited.
	o = o.Merge(LimitOverrides{Pids: &pids})
	if got := base.With(o); got.Pids != 0 || got.MemoryBytes != 64<<20 {
		t.Errorf("With after merge = %+v", got)
	}
	if !(LimitOverrides{}).IsZero() || o.IsZero() {
		t.Error("IsZero")
	}
	if s := (Limits{MemoryBytes: 512 << 20, CPUs: 1.5}).String(); s != "memory 512MiB, cpus 1.5, pids max" {
		t.Errorf("String = %q", s)
	}
}

func TestParseLimitFlags(t *testing.T) {
	if n, err := ParseMemoryLimit("512M"); err != nil || n != 512<<20 {
		t.Errorf("ParseMemoryLimit(512M) = %d, %v", n, err)
	}
	if n, err := ParseMemoryLimit("max"); err != nil || n != 0 {
		t.Errorf("ParseMemoryLimit(max) = %d, %v", n, err)
	}
	if _, err := ParseMemoryLimit("lots"); err == nil || !strings.Contains(err.Error(), "or max for no limit") {
		t.Errorf("ParseMemoryLimit(lots) = %v", err)
	}
	if f, err := ParseCPULimit("1.5"); err != nil || f != 1.5 {
		t.Errorf("ParseCPULimit(1.5) = %v, %v", f, err)
	}
	for _, bad := range []string{"0", "0.001", "-1", "NaN", "two"} {
		if _, err := ParseCPULimit(bad); err == nil {
			t.Errorf("ParseCPULimit(%q) succeeded", bad)
		}
	}
	if n, err := ParsePidsLimit("2000"); err != nil || n != 2000 {
		t.Errorf("ParsePidsLimit(2000) = %d, %v", n, err)
	}
	for _, bad := range []string{"0", "1.5", "-3", "many"} {
		if _, err := ParsePidsLimit(bad); err == nil {
			t.Errorf("ParsePidsLimit(%q) succeeded", bad)
		}
	}
	if _, err := Parse([]byte(`{"limits": {"cpus": 0.001}}`)); err == nil || !strings.Contains(err.Error(), "limits.cpus: must be at least 0.01 CPUs") {
		t.Errorf("Parse(cpus 0.001) = %v", err)
	}
}

// TestLimitBounds: limits the kernel refuses, or with which nothing can
// boot, are refused when parsed (at create and update), not at start
// (issue 13, item 4); the bounds themselves are accepted.
func TestLimitBounds(t *testing.T) {
	for _, c := range []struct {
		flag  string
		parse func(string) error
		good  []string
		bad   map[string]string
	}{
		{"--cpus", func(s string) error { _, err := ParseCPULimit(s); return err },
			[]string{"0.01", "175921860", "1000"},
			map[string]string{"1e9": "at most 175921860 CPUs", "175921861": "at most", "1e300": "at most"}},
		{"--memory", func(s string) error { _, err := ParseMemoryLimit(s); return err },
			[]string{"4M", "4194304", "1T"},
			map[string]string{"1": "at least 4MiB", "4194303": "at least 4MiB", "1K": "at least", "3M": "at least"}},
		{"--pids", func(s string) error { _, err := ParsePidsLimit(s); return err },
			[]string{"1", "4194304"},
			map[string]string{"4194305": "at most 4194304 processes", "9999999999": "at most"}},
	} {
		for _, g := range c.good {
			if err := c.parse(g); err != nil {
				t.Errorf("%s %s: %v", c.flag, g, err)
			}
		}
		for b, want := range c.bad {
			if err := c.parse(b); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s %s: %v, want an error containing %q", c.flag, b, err, want)
			}
		}
	}
	for in, want := range map[string]string{
		`{"limits": {"cpus": 1e9}}`:       "limits.cpus: must be at most 175921860 CPUs",
		`{"limits": {"memory": 1}}`:       "limits.memory: must be at least 4MiB",
		`{"limits": {"memory": "1M"}}`:    "limits.memory: must be at least 4MiB",
		`{"limits": {"pids": 4194305}}`:   "limits.pids: must be at most 4194304",
		`{"limits": {"memory": "4M"}}`:    "",
		`{"limits": {"pids": 4194304}}`:   "",
		`{"limits": {"cpus": 175921860}}`: "",
	} {
		_, err := Parse([]byte(in))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("Parse(%s) = %v, want %q", in, err, want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 1000: "1000B", 1536: "1.5KiB", 64 << 20: "64MiB", 3 << 30: "3GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
