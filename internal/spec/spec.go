package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
)

// ErrInvalidSpec is the class of every configuration validation error.
var ErrInvalidSpec = fault.New(fault.Invalid, "invalid container configuration")

// Spec is the host-side part of a container's configuration: everything of
// nixcloud-container's attribute set form except `configuration`, which is
// the NixOS module and belongs to Nix. The zero Spec is a container with
// default settings (the bare-module form). It is stored with the container
// and may change on every update unless a field says otherwise.
type Spec struct {
	// Autostart starts the container when the host boots.
	Autostart bool `json:"autostart,omitempty"`
	// Network selects and configures the container's network.
	Network Network `json:"network"`
	// BindMounts are host paths mounted into the container, sorted by
	// Destination.
	BindMounts []BindMount `json:"bindMounts,omitempty"`
	// Tmpfs are paths inside the container that get an empty tmpfs at
	// every start, as nixos-container's `tmpfs` option; sorted.
	Tmpfs []string `json:"tmpfs,omitempty"`
	// Limits caps the container's resources; zero fields are unlimited.
	Limits Limits `json:"limits"`
	// Ephemeral containers start from a fresh root every time: what the
	// container writes to its root is gone when it stops (bind mounts keep
	// theirs).
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Privileged runs the container without its own user namespace, so its
	// root is the host's root. Never the default.
	Privileged bool `json:"privileged,omitempty"`
	// Store is "full" (the whole host store, the default) or "closure" (only
	// the system's closure is visible).
	Store string `json:"store,omitempty"`
	// AllowedDevices are device nodes the container may use beyond the
	// standard ones.
	AllowedDevices []Device `json:"allowedDevices,omitempty"`
	// InitArgs are passed to the init after its path, as systemd-nspawn
	// passes what follows the init on its command line (systemd reads
	// systemd.unit=, systemd.log_level= and the like there). They apply
	// from the next start.
	InitArgs []string `json:"initArgs,omitempty"`
	// ConsoleLogSize caps the console log: it keeps the latest output,
	// this many bytes at most across console.log and console.log.1 (0: the
	// runtime's default). It applies from the next start.
	ConsoleLogSize uint64 `json:"consoleLogSize,omitempty"`
}

// MinConsoleLogSize is the smallest console log cap: each half of it holds
// a whole read of the console agent (64 KiB).
const MinConsoleLogSize = 128 << 10

// Network is the `network` attribute set.
type Network struct {
	// Bridge is the managed bridge to attach to ("" = the host-only one).
	Bridge string `json:"bridge,omitempty"`
	// IP and IP6 fix the container's addresses on its bridge; invalid
	// (zero) means automatic.
	IP  netip.Prefix `json:"ip,omitzero"`
	IP6 netip.Prefix `json:"ip6,omitzero"`
	// EnableNat adds an interface on the NAT bridge.
	EnableNat bool `json:"enableNat,omitempty"`
	// NoIPv6 turns off the automatic IPv6 addresses (network.enableIPv6 =
	// false; NixUnits' -6).
	NoIPv6 bool `json:"noIPv6,omitempty"`
	// HostNetwork shares the host's network namespace.
	HostNetwork bool `json:"hostNetwork,omitempty"`
	// HostAddress and LocalAddress (and their IPv6 variants) select a private
	// veth pair, as nixos-container's options of the same names.
	HostAddress   netip.Prefix `json:"hostAddress,omitzero"`
	LocalAddress  netip.Prefix `json:"localAddress,omitzero"`
	HostAddress6  netip.Prefix `json:"hostAddress6,omitzero"`
	LocalAddress6 netip.Prefix `json:"localAddress6,omitzero"`
	// AllowPeers lets the container reach other containers on its bridge
	// that allow it too; by default containers are isolated from each other.
	AllowPeers bool `json:"allowPeers,omitempty"`
	// Macvlans are host interfaces to give the container a macvlan on.
	Macvlans []string `json:"macvlans,omitempty"`
	// ForwardPorts are host ports forwarded to the container.
	ForwardPorts []PortForward `json:"forwardPorts,omitempty"`
}

// PortForward is one entry of network.forwardPorts.
type PortForward struct {
	Protocol      string     `json:"protocol"` // "tcp" or "udp"
	HostPort      uint16     `json:"hostPort"`
	ContainerPort uint16     `json:"containerPort"`
	HostAddress   netip.Addr `json:"hostAddress,omitzero"` // zero: every host address
}

// BindMount is one entry of bindMounts.
type BindMount struct {
	Destination string `json:"destination"`
	HostPath    string `json:"hostPath"`
	IsReadOnly  bool   `json:"isReadOnly"`
	// Create makes a missing HostPath instead of failing.
	Create bool `json:"create,omitempty"`
	// WriteAsHostRoot shows a read-write HostPath through the container's
	// ID mapping: host IDs appear as themselves inside, and the
	// container's root writes there as the host's root. Without it, the
	// container's files there belong to its own ID range on the host.
	WriteAsHostRoot bool `json:"writeAsHostRoot,omitempty"`
}

// Limits is the `limits` attribute set: the container's memory in bytes
// (swap counts against it, so swap cannot stretch it), its CPU time in CPUs
// (1.5 is 150 ms per 100 ms) and its number of processes and threads. Zero
// is unlimited.
type Limits struct {
	MemoryBytes uint64  `json:"memoryBytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
}

// Device is one entry of allowedDevices, as in nixos-container.
type Device struct {
	Node     string `json:"node"`
	Modifier string `json:"modifier"`
}

// Parse reads the JSON that Nix printed for the attribute set form of a
// configuration, without its `configuration` attribute, and validates it.
// Unknown attributes are errors: a misspelt option must not be ignored.
func Parse(data []byte) (Spec, error) {
	var s Spec
	d := decoder{}
	d.object(data, "", map[string]func(json.RawMessage, string){
		"autostart": d.boolInto(&s.Autostart),
		"network": func(raw json.RawMessage, at string) {
			s.Network = d.network(raw, at)
		},
		"bindMounts": func(raw json.RawMessage, at string) {
			s.BindMounts = d.bindMounts(raw, at)
		},
		"limits": func(raw json.RawMessage, at string) {
			s.Limits = d.limits(raw, at)
		},
		"tmpfs": func(raw json.RawMessage, at string) {
			s.Tmpfs = d.tmpfs(raw, at)
		},
		"ephemeral":  d.boolInto(&s.Ephemeral),
		"privileged": d.boolInto(&s.Privileged),
		"store": func(raw json.RawMessage, at string) {
			s.Store = d.str(raw, at)
			if s.Store != "full" && s.Store != "closure" {
				d.fail(at, "must be \"full\" or \"closure\", not %q", s.Store)
			}
		},
		"initArgs": func(raw json.RawMessage, at string) {
			for i, item := range d.list(raw, at) {
				where := fmt.Sprintf("%s[%d]", at, i)
				a := d.str(item, where)
				if a == "" || strings.ContainsRune(a, 0) {
					d.fail(where, "must be a non-empty argument without NUL characters")
				}
				s.InitArgs = append(s.InitArgs, a)
			}
		},
		"consoleLogSize": func(raw json.RawMessage, at string) {
			var err error
			if s.ConsoleLogSize, err = parseBytes(raw); err != nil {
				d.fail(at, "%v", err)
			} else if s.ConsoleLogSize < MinConsoleLogSize {
				d.fail(at, "must be at least 128K, not %d bytes", s.ConsoleLogSize)
			}
		},
		"allowedDevices": func(raw json.RawMessage, at string) {
			for i, item := range d.list(raw, at) {
				var dev Device
				where := fmt.Sprintf("%s[%d]", at, i)
				d.object(item, where, map[string]func(json.RawMessage, string){
					"node":     d.strInto(&dev.Node),
					"modifier": d.strInto(&dev.Modifier),
				})
				if !strings.HasPrefix(dev.Node, "/dev/") {
					d.fail(where+".node", "must be a path under /dev, not %q", dev.Node)
				}
				if dev.Modifier == "" || strings.Trim(dev.Modifier, "rwm") != "" {
					d.fail(where+".modifier", "must be made of r, w and m, not %q", dev.Modifier)
				}
				s.AllowedDevices = append(s.AllowedDevices, dev)
			}
		},
	})
	if d.err != nil {
		return Spec{}, d.err
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Validate checks the rules that span several attributes.
func (s Spec) Validate() error {
	n := s.Network
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	veth := n.HostAddress.IsValid() || n.LocalAddress.IsValid() || n.HostAddress6.IsValid() || n.LocalAddress6.IsValid()
	if n.HostNetwork && (veth || n.Bridge != "" || n.EnableNat || len(n.ForwardPorts) > 0 || len(n.Macvlans) > 0 || n.AllowPeers) {
		return fail("network.hostNetwork shares the host's network; it cannot be combined with bridge, enableNat, forwardPorts, macvlans or host/local addresses")
	}
	if n.NoIPv6 && n.IP6.IsValid() {
		return fail("network.ip6 is set but network.enableIPv6 is false")
	}
	if n.HostAddress.IsValid() != n.LocalAddress.IsValid() {
		return fail("network.hostAddress and network.localAddress must be set together")
	}
	if n.HostAddress6.IsValid() != n.LocalAddress6.IsValid() {
		return fail("network.hostAddress6 and network.localAddress6 must be set together")
	}
	mounted := map[string]bool{}
	for _, b := range s.BindMounts {
		mounted[b.Destination] = true
	}
	for _, t := range s.Tmpfs {
		if mounted[t] {
			return fail("%s is both a bind mount and a tmpfs", t)
		}
	}
	seen := map[string]bool{}
	for _, f := range n.ForwardPorts {
		key := fmt.Sprintf("%s/%s:%d", f.Protocol, f.HostAddress, f.HostPort)
		if seen[key] {
			return fail("network.forwardPorts: host port %s %d is forwarded twice", f.Protocol, f.HostPort)
		}
		seen[key] = true
	}
	return nil
}

// decoder walks Nix's JSON output, remembering the first error with the
// attribute path where it happened.
type decoder struct{ err error }

func (d *decoder) fail(at, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrInvalidSpec, at, fmt.Sprintf(format, args...))
	}
}

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

// object decodes an attribute set, calling fields[name] for each attribute
// and failing on attributes it does not know. Attributes are visited in
// sorted order so the first error is the same on every run.
func (d *decoder) object(raw json.RawMessage, at string, fields map[string]func(json.RawMessage, string)) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		d.fail(orRoot(at), "must be an attribute set")
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			sort.Strings(known)
			d.fail(join(at, k), "unknown attribute (known here: %s)", strings.Join(known, ", "))
			return
		}
		if string(m[k]) == "null" {
			continue // null means "use the default", as Nix options do
		}
		f(m[k], join(at, k))
	}
}

func orRoot(at string) string {
	if at == "" {
		return "the configuration"
	}
	return at
}

func (d *decoder) list(raw json.RawMessage, at string) []json.RawMessage {
	var l []json.RawMessage
	if err := json.Unmarshal(raw, &l); err != nil {
		d.fail(at, "must be a list")
	}
	return l
}

func (d *decoder) boolInto(p *bool) func(json.RawMessage, string) {
	return func(raw json.RawMessage, at string) {
		if err := json.Unmarshal(raw, p); err != nil {
			d.fail(at, "must be true or false")
		}
	}
}

func (d *decoder) str(raw json.RawMessage, at string) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		d.fail(at, "must be a string")
	}
	return s
}

func (d *decoder) strInto(p *string) func(json.RawMessage, string) {
	return func(raw json.RawMessage, at string) { *p = d.str(raw, at) }
}

func (d *decoder) number(raw json.RawMessage, at string) float64 {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		d.fail(at, "must be a number")
	}
	return f
}

func (d *decoder) port(raw json.RawMessage, at string) uint16 {
	f := d.number(raw, at)
	if f != math.Trunc(f) || f < 1 || f > 65535 {
		d.fail(at, "must be a port number from 1 to 65535, not %v", f)
		return 0
	}
	return uint16(f)
}

// prefix reads an address with an optional prefix length; without one it
// stands for the single address.
func (d *decoder) prefix(want int, raw json.RawMessage, at string) netip.Prefix {
	s := d.str(raw, at)
	if d.err != nil {
		return netip.Prefix{}
	}
	p, err := ParseAddress(s)
	if err != nil {
		d.fail(at, "%v", err)
		return p
	}
	if want == 4 && !p.Addr().Is4() || want == 6 && !p.Addr().Is6() {
		d.fail(at, "%q is not an IPv%d address", s, want)
	}
	return p
}

// ParseAddress parses "ADDR" or "ADDR/LEN"; a bare address is a full-length
// prefix.
func ParseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address with prefix length", s)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (d *decoder) prefixInto(want int, p *netip.Prefix) func(json.RawMessage, string) {
	return func(raw json.RawMessage, at string) { *p = d.prefix(want, raw, at) }
}

func (d *decoder) network(raw json.RawMessage, at string) Network {
	var n Network
	d.object(raw, at, map[string]func(json.RawMessage, string){
		"bridge": func(raw json.RawMessage, at string) {
			n.Bridge = d.str(raw, at)
			if n.Bridge == "" || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ \t\n:") {
				d.fail(at, "%q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", n.Bridge)
			}
		},
		"ip":         d.prefixInto(4, &n.IP),
		"ip6":        d.prefixInto(6, &n.IP6),
		"enableNat":  d.boolInto(&n.EnableNat),
		"allowPeers": d.boolInto(&n.AllowPeers),
		"enableIPv6": func(raw json.RawMessage, at string) {
			var on bool
			d.boolInto(&on)(raw, at)
			n.NoIPv6 = !on
		},
		"hostNetwork":   d.boolInto(&n.HostNetwork),
		"hostAddress":   d.prefixInto(4, &n.HostAddress),
		"localAddress":  d.prefixInto(4, &n.LocalAddress),
		"hostAddress6":  d.prefixInto(6, &n.HostAddress6),
		"localAddress6": d.prefixInto(6, &n.LocalAddress6),
		"macvlans": func(raw json.RawMessage, at string) {
			for i, item := range d.list(raw, at) {
				where := fmt.Sprintf("%s[%d]", at, i)
				name := d.str(item, where)
				if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:") {
					d.fail(where, "%q is not a valid interface name", name)
				}
				n.Macvlans = append(n.Macvlans, name)
			}
		},
		"forwardPorts": func(raw json.RawMessage, at string) {
			for i, item := range d.list(raw, at) {
				n.ForwardPorts = append(n.ForwardPorts, d.forward(item, fmt.Sprintf("%s[%d]", at, i)))
			}
		},
	})
	return n
}

func (d *decoder) forward(raw json.RawMessage, at string) PortForward {
	f := PortForward{Protocol: "tcp"}
	d.object(raw, at, map[string]func(json.RawMessage, string){
		"protocol": func(raw json.RawMessage, at string) {
			f.Protocol = d.str(raw, at)
			if f.Protocol != "tcp" && f.Protocol != "udp" {
				d.fail(at, "must be \"tcp\" or \"udp\", not %q", f.Protocol)
			}
		},
		"hostPort":      func(raw json.RawMessage, at string) { f.HostPort = d.port(raw, at) },
		"containerPort": func(raw json.RawMessage, at string) { f.ContainerPort = d.port(raw, at) },
		"hostAddress": func(raw json.RawMessage, at string) {
			s := d.str(raw, at)
			a, err := netip.ParseAddr(s)
			if err != nil && d.err == nil {
				d.fail(at, "%q is not an IP address", s)
			}
			f.HostAddress = a
		},
	})
	if f.HostPort == 0 && d.err == nil {
		d.fail(at+".hostPort", "is required")
	}
	if f.ContainerPort == 0 {
		f.ContainerPort = f.HostPort
	}
	return f
}

func (d *decoder) bindMounts(raw json.RawMessage, at string) []BindMount {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		d.fail(at, "must be an attribute set of mount points")
		return nil
	}
	var mounts []BindMount
	for dest, item := range m {
		where := fmt.Sprintf("%s.%q", at, dest)
		b := BindMount{Destination: dest, HostPath: dest, IsReadOnly: true}
		d.object(item, where, map[string]func(json.RawMessage, string){
			"hostPath":        d.strInto(&b.HostPath),
			"isReadOnly":      d.boolInto(&b.IsReadOnly),
			"create":          d.boolInto(&b.Create),
			"mountPoint":      d.strInto(&b.Destination),
			"writeAsHostRoot": d.boolInto(&b.WriteAsHostRoot),
		})
		if b.WriteAsHostRoot && b.IsReadOnly && d.err == nil {
			d.fail(where+".writeAsHostRoot", "applies to a read-write mount (isReadOnly = false)")
		}
		for _, p := range []struct{ name, v string }{{"mount point", b.Destination}, {"hostPath", b.HostPath}} {
			if !path.IsAbs(p.v) || path.Clean(p.v) != p.v {
				d.fail(where, "%s %q must be an absolute, clean path", p.name, p.v)
			}
		}
		d.mountPoint(where, b.Destination)
		mounts = append(mounts, b)
	}
	slices.SortFunc(mounts, func(a, b BindMount) int { return strings.Compare(a.Destination, b.Destination) })
	for i := 1; i < len(mounts); i++ {
		if mounts[i].Destination == mounts[i-1].Destination {
			d.fail(at, "two mounts at %q", mounts[i].Destination)
		}
	}
	return mounts
}

// ReservedMounts are where the runtime mounts what every container needs.
// A user mount (bindMounts, tmpfs) there or above is refused, since it
// would hide it; one below is refused where Below says so. The runtime's
// tests check that every mount it makes is here or in DefaultMounts, so
// the two cannot drift.
var ReservedMounts = []struct {
	Path  string
	Below bool // a mount below it is refused too
}{
	{"/proc", true}, {"/sys", true}, {"/dev", true}, {"/run/host", true},
	// The host's Nix directories, for a NixOS system. Below the store is
	// allowed: such a mount gets its mount point in the closure view too.
	{"/nix/store", false}, {"/nix/var/nix/db", true}, {"/nix/var/nix/daemon-socket", true},
	{"/nix/var/nix/profiles", true}, {"/nix/var/nix/gcroots", false},
}

// DefaultMounts are what the runtime mounts that a user mount may replace
// (a bind or tmpfs of the user's own at /tmp takes its place).
var DefaultMounts = []string{"/tmp"}

// IsReserved tells whether a user mount at p would hide or interfere with
// one of ReservedMounts.
func IsReserved(p string) bool {
	if p == "/" {
		return true
	}
	for _, r := range ReservedMounts {
		if p == r.Path || strings.HasPrefix(r.Path, p+"/") || r.Below && strings.HasPrefix(p, r.Path+"/") {
			return true
		}
	}
	return false
}

// mountPoint rejects mount points that would hide the root or what the
// runtime mounts.
func (d *decoder) mountPoint(at, p string) {
	if p == "/" {
		d.fail(at, "cannot mount over the root file system")
		return
	}
	if IsReserved(p) {
		d.fail(at, "%s is mounted by nixcell itself; choose another mount point", p)
	}
}

// tmpfs reads the `tmpfs` list: mount points inside the container.
func (d *decoder) tmpfs(raw json.RawMessage, at string) []string {
	var paths []string
	for i, item := range d.list(raw, at) {
		where := fmt.Sprintf("%s[%d]", at, i)
		p := d.str(item, where)
		if d.err != nil {
			return nil
		}
		if !path.IsAbs(p) || path.Clean(p) != p {
			d.fail(where, "mount point %q must be an absolute, clean path", p)
		}
		d.mountPoint(where, p)
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for i := 1; i < len(paths); i++ {
		if paths[i] == paths[i-1] {
			d.fail(at, "%q is listed twice", paths[i])
		}
	}
	return paths
}

func (d *decoder) limits(raw json.RawMessage, at string) Limits {
	var l Limits
	d.object(raw, at, map[string]func(json.RawMessage, string){
		"memory": func(raw json.RawMessage, at string) {
			var err error
			if l.MemoryBytes, err = parseBytes(raw); err != nil {
				d.fail(at, "%v", err)
			} else if err := checkMemory(l.MemoryBytes); err != nil {
				d.fail(at, "%v", err)
			}
		},
		"cpus": func(raw json.RawMessage, at string) {
			l.CPUs = d.number(raw, at)
			if l.CPUs <= 0 {
				d.fail(at, "must be a positive number of CPUs, not %v", l.CPUs)
			} else if err := checkCPUs(l.CPUs); err != nil {
				d.fail(at, "%v", err)
			}
		},
		"pids": func(raw json.RawMessage, at string) {
			f := d.number(raw, at)
			if f != math.Trunc(f) || f < 1 {
				d.fail(at, "must be a positive whole number, not %v", f)
			} else if f > MaxPids {
				d.fail(at, "%v", checkPids(MaxPids+1))
			}
			l.Pids = int64(f)
		},
	})
	return l
}

// parseBytes accepts a number of bytes or a string like "512M" or "2GiB"
// (K, M, G, T are powers of 1024, as systemd's MemoryMax= reads them).
func parseBytes(raw json.RawMessage) (uint64, error) {
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		if n < 1 || n != math.Trunc(n) {
			return 0, fmt.Errorf("must be a positive number of bytes, not %v", n)
		}
		return uint64(n), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, errors.New(`must be a size such as "512M" or a number of bytes`)
	}
	return ParseSize(s)
}

// ParseSize reads sizes like "512M", "2G", "1.5GiB" or "4096".
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "iB"), "B")
	mult := 1.0
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]&^0x20); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || f*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size such as \"512M\" or \"2G\"", s)
	}
	return uint64(f * mult), nil
}
