package spec

import (
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"path"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The fuzz targets of this file run their seeds (below and in
// testdata/fuzz) with every go test; scripts/test.sh fuzzes each for a
// few seconds, and `go test -fuzz=FuzzSpecParse -fuzztime=10m
// ./internal/spec` for longer. Each checks what the function promises,
// beyond not panicking.

// FuzzValidateName: a name that validates is a DNS label that can be a
// directory name, a host name and a cgroup: no path can be walked with it.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"web", "a", "web-1", "global", "tasks", "localhost", "..", "a/b", "Web", "web-", "-web",
		"wéb", "a\x00b", strings.Repeat("a", MaxNameLen), strings.Repeat("a", MaxNameLen+1), ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ValidateName(%q) = %v, not an ErrInvalidName", name, err)
			}
			return
		}
		if name == "" || len(name) > MaxNameLen || name == "localhost" {
			t.Fatalf("ValidateName accepted %q", name)
		}
		if name[0] < 'a' || name[0] > 'z' || strings.HasSuffix(name, "-") {
			t.Fatalf("ValidateName accepted %q, which does not start with a letter or ends with '-'", name)
		}
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			t.Fatalf("ValidateName accepted %q, which has a character outside a-z, 0-9 and '-'", name)
		}
		if path.Base(name) != name || path.Clean(name) != name || strings.ToLower(name) != name {
			t.Fatalf("ValidateName accepted %q, which is not one clean path element", name)
		}
	})
}

// specSeeds are configurations as Nix prints them, good and bad.
var specSeeds = []string{
	`{}`,
	`null`,
	`[]`,
	`{"autostart": true, "ephemeral": null}`,
	`{"network": {"bridge": "br0", "ip": "10.101.0.5", "ip6": "fd00::5/64", "enableNat": true,
		"forwardPorts": [{"protocol": "udp", "hostPort": 53}, {"hostPort": 8080, "containerPort": 80, "hostAddress": "127.0.0.1"}]},
	  "bindMounts": {"/data": {"hostPath": "/srv/data", "isReadOnly": false, "create": true}, "/etc/ro": {},
		"/shared": {"hostPath": "/srv/shared", "isReadOnly": false, "writeAsHostRoot": true}},
	  "tmpfs": ["/var/cache", "/srv/scratch"],
	  "limits": {"memory": "512M", "cpus": 1.5, "pids": 2000},
	  "store": "closure",
	  "allowedDevices": [{"node": "/dev/net/tun", "modifier": "rw"}],
	  "initArgs": ["systemd.unit=rescue.target"],
	  "consoleLogSize": "8M"}`,
	`{"network": {"hostNetwork": true}}`,
	`{"network": {"hostAddress": "10.0.0.1", "localAddress": "10.0.0.2/24", "hostAddress6": "fd00::1", "localAddress6": "fd00::2"}}`,
	`{"network": {"enableIPv6": false, "ip6": "fd00::5"}}`,
	`{"network": {"forwardPorts": [{"hostPort": 80}, {"hostPort": 80, "hostAddress": "fe80::1%eth0"}]}}`,
	`{"bindMounts": {"/a": {"mountPoint": "/b"}, "/b": {}}}`,
	`{"bindMounts": {"/proc/x": {}, "/dev/y": {}, "rel": {}}}`,
	`{"tmpfs": ["/tmp", "/tmp"], "bindMounts": {"/tmp": {}}}`,
	`{"limits": {"memory": 1e30, "cpus": 1e9, "pids": 4194305}}`,
	`{"limits": {"memory": "NaN"}}`,
	`{"limits": {"memory": "0.5"}}`,
	`{"consoleLogSize": 1e300}`,
	`{"allowedDevices": [{"node": "/dev/fuse", "modifier": "rwx"}]}`,
	`{"unknown": 1}`,
}

// FuzzSpecParse: Parse gives a valid Spec or an ErrInvalidSpec, the same
// on every call; what it accepts keeps the rules it enforces, and survives
// being stored in the container's record (JSON) unchanged.
func FuzzSpecParse(f *testing.F) {
	for _, s := range specSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		_, err2 := Parse(data)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("Parse(%q) gives %v, then %v", data, err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Parse(%q) = %v, not an ErrInvalidSpec", data, err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted a spec that Validate refuses: %v", data, err)
		}
		checkSpecRules(t, s)
		stored, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("encoding %+v: %v", s, err)
		}
		var back Spec
		if err := json.Unmarshal(stored, &back); err != nil {
			t.Fatalf("decoding the stored %s: %v", stored, err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("Parse(%q) = %+v, stored as %s, read back as %+v", data, s, stored, back)
		}
		_ = s.Limits.String()
	})
}

// checkSpecRules checks the per-attribute rules Parse promises.
func checkSpecRules(t *testing.T, s Spec) {
	t.Helper()
	mountPoint := func(what, p string) {
		if !path.IsAbs(p) || path.Clean(p) != p || IsReserved(p) {
			t.Fatalf("accepted %s %q: not absolute and clean, or reserved", what, p)
		}
	}
	for i, b := range s.BindMounts {
		mountPoint("bind mount", b.Destination)
		if !path.IsAbs(b.HostPath) || path.Clean(b.HostPath) != b.HostPath {
			t.Fatalf("accepted hostPath %q", b.HostPath)
		}
		if i > 0 && s.BindMounts[i-1].Destination >= b.Destination {
			t.Fatalf("bind mounts not sorted or not unique: %+v", s.BindMounts)
		}
		if b.WriteAsHostRoot && b.IsReadOnly {
			t.Fatalf("accepted writeAsHostRoot on a read-only mount %+v", b)
		}
	}
	for i, p := range s.Tmpfs {
		mountPoint("tmpfs", p)
		if i > 0 && s.Tmpfs[i-1] >= p {
			t.Fatalf("tmpfs not sorted or not unique: %q", s.Tmpfs)
		}
	}
	for _, fw := range s.Network.ForwardPorts {
		if fw.HostPort == 0 || fw.ContainerPort == 0 || fw.Protocol != "tcp" && fw.Protocol != "udp" {
			t.Fatalf("accepted forward %+v", fw)
		}
	}
	l := s.Limits
	if l.MemoryBytes != 0 && (l.MemoryBytes < MinMemoryBytes || l.MemoryBytes > math.MaxInt64) {
		t.Fatalf("accepted memory limit %d", l.MemoryBytes)
	}
	if l.CPUs != 0 && !(l.CPUs >= MinCPUs && l.CPUs <= MaxCPUs) {
		t.Fatalf("accepted CPU limit %v", l.CPUs)
	}
	if l.Pids < 0 || l.Pids > MaxPids {
		t.Fatalf("accepted pids limit %d", l.Pids)
	}
	if s.ConsoleLogSize != 0 && (s.ConsoleLogSize < MinConsoleLogSize || s.ConsoleLogSize > math.MaxInt64) {
		t.Fatalf("accepted console log size %d", s.ConsoleLogSize)
	}
	if s.Store != "" && s.Store != "full" && s.Store != "closure" {
		t.Fatalf("accepted store %q", s.Store)
	}
	for _, a := range s.InitArgs {
		if a == "" || strings.ContainsRune(a, 0) {
			t.Fatalf("accepted init argument %q", a)
		}
	}
}

// FuzzParseAddress: an address that parses is valid, has no zone, prints
// as something that parses to the same prefix, and is stored (JSON) and
// read back unchanged.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.5/24", "fd00::5/64", "fd00::5", "::ffff:10.0.0.1", "fe80::1%eth0",
		"fe80::1%eth0/64", "10.0.0.1/33", "10.0.0.1/", "/24", "", "1.2.3", "01.2.3.4", "::/0", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAddress(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p.Addr().Zone() != "" {
			t.Fatalf("ParseAddress(%q) = %v: invalid, or with a zone", s, p)
		}
		if !strings.Contains(s, "/") && p.Bits() != p.Addr().BitLen() {
			t.Fatalf("ParseAddress(%q) = %v: a bare address is not a full-length prefix", s, p)
		}
		again, err := ParseAddress(p.String())
		if err != nil || again != p {
			t.Fatalf("ParseAddress(%q) = %v, which parses as %v, %v", s, p, again, err)
		}
		data, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("encoding %v: %v", p, err)
		}
		var back netip.Prefix
		if err := json.Unmarshal(data, &back); err != nil || back != p {
			t.Fatalf("%v stored as %s reads back as %v, %v", p, data, back, err)
		}
	})
}

// FuzzLimits: the limit flags and sizes give a value within the kernel's
// bounds or an error; what they accept prints (Limits.String) as
// something they read back as the same value (sizes: to the one decimal
// FormatSize keeps).
func FuzzLimits(f *testing.F) {
	for _, s := range []string{"max", "512M", "2G", "1.5GiB", "4096", "4M", "3M", "1.5", "0.01", "0.009", "1e9", "175921860",
		"2000", "4194304", "4194305", "0", "-1", " 7 ", "NaN", "Inf", "0.5", "0x1p-2", "1e300", "9223372036854775807", "8E", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil {
			if n < 1 || n > math.MaxInt64 {
				t.Fatalf("ParseSize(%q) = %d, not a positive size of at most 2^63-1 bytes", s, n)
			}
			if n < 1<<50 { // FormatSize prints up to TiB with units ParseSize reads
				printed := FormatSize(n)
				back, err := ParseSize(printed)
				if err != nil {
					t.Fatalf("ParseSize(%q) = %d, printed %q, which does not parse: %v", s, n, printed, err)
				}
				if n < 1024 && back != n || math.Abs(float64(back)-float64(n)) > 0.05*float64(n) {
					t.Fatalf("ParseSize(%q) = %d, printed %q, read back as %d", s, n, printed, back)
				}
			}
		}
		mem, memErr := ParseMemoryLimit(s)
		cpus, cpuErr := ParseCPULimit(s)
		pids, pidsErr := ParsePidsLimit(s)
		if s == "max" {
			if mem != 0 || cpus != 0 || pids != 0 || memErr != nil || cpuErr != nil || pidsErr != nil {
				t.Fatalf("max is not unlimited: %d %v, %v %v, %d %v", mem, memErr, cpus, cpuErr, pids, pidsErr)
			}
			return
		}
		if memErr == nil {
			if n, err := ParseSize(s); err != nil || n != mem || mem < MinMemoryBytes {
				t.Fatalf("ParseMemoryLimit(%q) = %d; ParseSize gives %d, %v", s, mem, n, err)
			}
		}
		if cpuErr == nil {
			if math.IsNaN(cpus) || cpus < MinCPUs || cpus > MaxCPUs {
				t.Fatalf("ParseCPULimit(%q) = %v, out of bounds", s, cpus)
			}
			printed := strconv.FormatFloat(cpus, 'f', -1, 64)
			if back, err := ParseCPULimit(printed); err != nil || back != cpus {
				t.Fatalf("ParseCPULimit(%q) = %v, printed %q, read back as %v, %v", s, cpus, printed, back, err)
			}
		}
		if pidsErr == nil {
			if pids < 1 || pids > MaxPids {
				t.Fatalf("ParsePidsLimit(%q) = %d, out of bounds", s, pids)
			}
		}
		l := Limits{MemoryBytes: mem, CPUs: cpus, Pids: pids}
		if l.String() == "" {
			t.Fatal("Limits.String is empty")
		}
	})
}
