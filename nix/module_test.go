package nixfiles

import (
	"encoding/json"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/spec"
)

// hostEval is what nix/tests/eval.nix says of a host configuration, plus
// what each container's own NixOS configuration became (inner).
type hostEval struct {
	Units    map[string]string          `json:"units"`
	Wants    map[string][]string        `json:"wants"`
	Etc      map[string]*string         `json:"etc"`
	Settings map[string]json.RawMessage `json:"settings"`
	Systems  map[string]string          `json:"systems"`
	Failed   []string                   `json:"failed"`
	Warnings []string                   `json:"warnings"`
	Host     struct {
		Packages    []string          `json:"packages"`
		Variables   map[string]string `json:"variables"`
		NixcellUser struct {
			IsSystemUser bool
			Group        string
			SubUIDRanges []struct{ StartUID, Count int64 } `json:"subUidRanges"`
			SubGIDRanges []struct{ StartGID, Count int64 } `json:"subGidRanges"`
		} `json:"nixcellUser"`
		Groups         []string       `json:"groups"`
		KernelModules  []string       `json:"kernelModules"`
		Sysctl         map[string]any `json:"sysctl"`
		Firewall       map[string]struct{ AllowedTCPPorts, AllowedUDPPorts []int }
		DhcpcdDeny     []string       `json:"dhcpcdDeny"`
		Autostart      map[string]any `json:"autostart"`
		MultiUserWants []string       `json:"multiUserWants"`
		Activation     string         `json:"activation"`
		ExtraRules     string         `json:"extraRules"`
	} `json:"host"`
	Inner map[string]*struct {
		HostName    string
		Nameservers []string
		UseDHCP     bool
		IsContainer bool
		Label       string
	} `json:"inner"`
}

func evalHost(t *testing.T, ms moduleSystem, generation int) hostEval {
	t.Helper()
	var h hostEval
	eval(t, &h, `let e = `+hostExpr(ms, generation, "")+`; in removeAttrs e [ "eval" "options" "etcSources" ] // {
		inner = builtins.mapAttrs (n: c: if c.config == null then null else {
			hostName = c.config.networking.hostName; nameservers = c.config.networking.nameservers;
			useDHCP = c.config.networking.useDHCP; isContainer = c.config.boot.isContainer;
			label = c.config.system.fixture.label;
		}) e.eval.config.nixcell.containers;
	}`)
	return h
}

// unitFile is a unit's sections: section -> key -> values.
type unitFile map[string]map[string][]string

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, _ := strings.Cut(line, "=")
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unitFile) get(section, key string) string { return strings.Join(u[section][key], "\n") }

func parseConf(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

var sampleContainers = []string{"db", "lan", "old", "shared", "veth", "web"}

// TestModule evaluates the sample host (nix/tests/host.nix) and checks the
// units, environment files, host settings and container settings the module
// makes of it.
func TestModule(t *testing.T) {
	for _, ms := range moduleSystems(t) {
		t.Run(ms.name, func(t *testing.T) {
			h := evalHost(t, ms, 1)
			if len(h.Failed) > 0 || len(h.Warnings) > 0 {
				t.Fatalf("failed assertions %q, warnings %q", h.Failed, h.Warnings)
			}
			hostEnv := map[string]string{
				"NIXCELL_HOSTONLY_SUBNET": "10.131.0.0/16", "NIXCELL_NAT_SUBNET": "10.102.0.0/16",
				"NIXCELL_ULA_PREFIX": "fd42:1:2::/48", "NIXCELL_UPLINK": "eth0",
			}
			var units []string
			for name := range h.Units {
				units = append(units, name)
			}
			sort.Strings(units)
			var want []string
			for _, n := range sampleContainers {
				want = append(want, "nixcell@"+n+".service")
			}
			if !slices.Equal(units, want) {
				t.Fatalf("units %v, want %v", units, want)
			}
			for _, name := range sampleContainers {
				unit := "nixcell@" + name + ".service"
				u := parseUnit(h.Units[unit])
				conf := parseConf(*h.Etc["nixcell/containers/"+name+".conf"])
				for k, v := range map[string]string{
					"Type": "notify", "NotifyAccess": "main", "Delegate": "yes", "KillMode": "mixed",
					"ExecStart":              "/run/current-system/sw/bin/nixcell run --timeout 80s " + name,
					"ExecStartPre":           "/etc/nixcell/apply-declared prepare " + name,
					"ExecReload":             "/etc/nixcell/apply-declared reload " + name,
					"EnvironmentFile":        "/etc/nixcell/containers/" + name + ".conf",
					"RestartForceExitStatus": "133", "SuccessExitStatus": "133", "Restart": "on-failure",
					"TimeoutStartSec": "1min", "X-StopIfChanged": "false",
				} {
					if got := u.get("Service", k); got != v {
						t.Errorf("%s: %s=%q, want %q", unit, k, got, v)
					}
				}
				// The unit holds no store path but its reload triggers: an upgrade of
				// nixcell or of the host's packages changes no unit.
				for _, line := range strings.Split(h.Units[unit], "\n") {
					if strings.Contains(line, "/nix/store/") && !strings.HasPrefix(line, "X-Reload-Triggers=") {
						t.Errorf("%s: a store path outside the reload triggers: %s", unit, line)
					}
				}
				if got, want := u.get("Unit", "X-Reload-Triggers"), h.Systems[name]+" "+conf["NIXCELL_SETTINGS"]; got != want {
					t.Errorf("%s: X-Reload-Triggers=%q, want %q", unit, got, want)
				}
				if len(u.get("Unit", "X-Restart-Triggers")) != 64 {
					t.Errorf("%s: X-Restart-Triggers=%q, want a hash", unit, u.get("Unit", "X-Restart-Triggers"))
				}
				if got, want := u.get("Service", "X-RestartIfChanged"), map[bool]string{true: "false"}[name == "veth"]; got != want {
					t.Errorf("%s: X-RestartIfChanged=%q, want %q", unit, got, want)
				}
				if got, want := h.Wants[unit], map[bool][]string{true: {"machines.target"}, false: {}}[name == "web"]; !slices.Equal(got, want) {
					t.Errorf("%s: wantedBy %v, want %v", unit, got, want)
				}

				if conf["NIXCELL_SYSTEM"] != h.Systems[name] || !strings.HasPrefix(h.Systems[name], "/nix/store/") {
					t.Errorf("%s.conf: NIXCELL_SYSTEM=%q, the container's system is %q", name, conf["NIXCELL_SYSTEM"], h.Systems[name])
				}
				if !strings.HasSuffix(conf["NIXCELL_SETTINGS"], "-nixcell-"+name+"-settings.nix") {
					t.Errorf("%s.conf: NIXCELL_SETTINGS=%q", name, conf["NIXCELL_SETTINGS"])
				}
				if !strings.Contains(conf["PATH"], "nix/bin") || !strings.Contains(conf["PATH"], "nftables/bin") {
					t.Errorf("%s.conf: PATH=%q lacks Nix or nft", name, conf["PATH"])
				}
				for k, v := range hostEnv {
					if conf[k] != v {
						t.Errorf("%s.conf: %s=%q, want %q", name, k, conf[k], v)
					}
				}
			}
			if _, ok := h.Etc["nixcell/apply-declared"]; !ok {
				t.Error("no /etc/nixcell/apply-declared")
			}

			checkHost(t, h, hostEnv)
			checkSettings(t, h)
			checkInner(t, h)
		})
	}
}

func checkHost(t *testing.T, h hostEval, hostEnv map[string]string) {
	t.Helper()
	host := h.Host
	if !slices.ContainsFunc(host.Packages, func(p string) bool { return strings.HasPrefix(p, "nixcell-") }) {
		t.Errorf("systemPackages %v lack nixcell", host.Packages)
	}
	if !reflect.DeepEqual(host.Variables, hostEnv) {
		t.Errorf("environment.variables %v, want %v", host.Variables, hostEnv)
	}
	u := host.NixcellUser
	if !u.IsSystemUser || u.Group != "nixcell" || !slices.Contains(host.Groups, "nixcell") ||
		len(u.SubUIDRanges) != 1 || u.SubUIDRanges[0].StartUID != 1<<28 || u.SubUIDRanges[0].Count != 1<<28 ||
		len(u.SubGIDRanges) != 1 || u.SubGIDRanges[0].StartGID != 1<<28 || u.SubGIDRanges[0].Count != 1<<28 {
		t.Errorf("user nixcell %+v, groups %v", u, host.Groups)
	}
	for _, m := range []string{"bridge", "veth", "macvlan"} {
		if !slices.Contains(host.KernelModules, m) {
			t.Errorf("boot.kernelModules %v lack %s", host.KernelModules, m)
		}
	}
	for k, v := range map[string]float64{"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1, "net.ipv6.conf.eth0.accept_ra": 2} {
		if host.Sysctl[k] != v {
			t.Errorf("sysctl %s = %v, want %v", k, host.Sysctl[k], v)
		}
	}
	// The bridges and interfaces the module names are the ones nixcell makes.
	settings, err := network.NewSettings("", network.Config{})
	if err != nil {
		t.Fatal(err)
	}
	port := network.HostIfName(settings.Table, "web", "eth0")
	for _, iface := range []string{settings.BridgeHostOnly, settings.BridgeNAT, port} {
		if !slices.ContainsFunc(host.DhcpcdDeny, func(p string) bool { ok, _ := path.Match(p, iface); return ok }) {
			t.Errorf("dhcpcd.denyInterfaces %v do not cover %s", host.DhcpcdDeny, iface)
		}
	}
	for _, br := range []string{settings.BridgeHostOnly, settings.BridgeNAT} {
		fw := host.Firewall[br]
		if !slices.Equal(fw.AllowedUDPPorts, []int{53}) || !slices.Equal(fw.AllowedTCPPorts, []int{53}) {
			t.Errorf("firewall of %s: %+v, want port 53 (nixcell's name server)", br, fw)
		}
	}
	if host.ExtraRules != "" {
		t.Errorf("udev rules without NetworkManager: %q", host.ExtraRules)
	}
	if !slices.Contains(host.MultiUserWants, "machines.target") {
		t.Errorf("multi-user.target wants %v, not machines.target (web has autoStart)", host.MultiUserWants)
	}
	if host.Autostart["ExecStart"] != "/run/current-system/sw/bin/nixcell autostart" {
		t.Errorf("nixcell-autostart.service: %v", host.Autostart)
	}
	if !strings.Contains(host.Activation, "activate.sh") || !strings.Contains(host.Activation, "/run/current-system/etc/systemd/system") {
		t.Errorf("activation script: %q", host.Activation)
	}
}

// checkSettings parses each container's settings as nixcell does and checks
// what they say.
func checkSettings(t *testing.T, h hostEval) {
	t.Helper()
	parsed := map[string]spec.Spec{}
	for name, raw := range h.Settings {
		s, err := spec.Parse(raw)
		if err != nil {
			t.Errorf("settings of %s: %v\n%s", name, err, raw)
			continue
		}
		parsed[name] = s
	}
	pfx := func(s string) netip.Prefix { p, _ := spec.ParseAddress(s); return p }
	web, db, veth, shared, lan := parsed["web"], parsed["db"], parsed["veth"], parsed["shared"], parsed["lan"]
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}
	check("web: autostart (the unit starts it)", web.Autostart, false)
	check("web: NAT", web.Network.EnableNat, true)
	check("web: forwards", web.Network.ForwardPorts, []spec.PortForward{
		{Protocol: "tcp", HostPort: 18080, ContainerPort: 80}, {Protocol: "udp", HostPort: 18053, ContainerPort: 18053}})
	check("web: limits", web.Limits, spec.Limits{MemoryBytes: 512 << 20, CPUs: 1.5})
	check("db: bind mount", db.BindMounts, []spec.BindMount{{Destination: "/data", HostPath: "/srv/db", IsReadOnly: false, Create: true}})
	check("db: tmpfs", db.Tmpfs, []string{"/var/cache"})
	check("db: enableTun", db.AllowedDevices, []spec.Device{{Node: "/dev/net/tun", Modifier: "rwm"}})
	check("db: network", db.Network, spec.Network{IP: pfx("10.131.0.50"), AllowPeers: true, NoIPv6: true})
	check("db: pids", db.Limits.Pids, int64(500))
	check("veth: network", veth.Network, spec.Network{HostAddress: pfx("10.231.136.1"), LocalAddress: pfx("10.231.136.2")})
	check("shared", []any{shared.Network, shared.Privileged, shared.Store, shared.Ephemeral, shared.AllowedDevices},
		[]any{spec.Network{HostNetwork: true}, true, "closure", true, []spec.Device{{Node: "/dev/fuse", Modifier: "rw"}}})
	check("lan: network", lan.Network, spec.Network{Bridge: "br0", IP: pfx("192.0.2.5/24"), IP6: pfx("2001:db8::5/64"), Macvlans: []string{"eth1"},
		ForwardPorts: []spec.PortForward{{Protocol: "tcp", HostPort: 18443, ContainerPort: 443, HostAddress: netip.MustParseAddr("127.0.0.1")}}})
}

// checkInner checks the containers' own configurations: the basics nixcell
// adds, as for a configuration file, and the module arguments.
func checkInner(t *testing.T, h hostEval) {
	t.Helper()
	for name, in := range h.Inner {
		if name == "veth" {
			if in != nil {
				t.Errorf("veth has a path, not a config: %+v", in)
			}
			continue
		}
		if in.HostName != name || in.UseDHCP || !in.IsContainer {
			t.Errorf("%s: %+v, want hostName %s, no DHCP, boot.isContainer", name, in, name)
		}
		// nixcell's name server on the host-only bridge, for those on it.
		var ns []string
		if name == "web" || name == "db" || name == "old" {
			ns = []string{"10.131.0.1"}
		}
		if !slices.Equal(in.Nameservers, ns) {
			t.Errorf("%s: nameservers %v, want %v", name, in.Nameservers, ns)
		}
	}
	if got := h.Inner["db"].Label; got != "db db 10.131.0.50" {
		t.Errorf("db's module arguments name and ip gave %q", got)
	}
}

// change is what switch-to-configuration does with a unit that changed from
// one generation to the next: it compares the unit files, and reloads a unit
// whose X-Reload-Triggers alone changed, restarts it when anything else did
// (unless X-RestartIfChanged=false holds it), and stops one that is gone.
func change(old, new string) string {
	if new == "" {
		return "stop"
	}
	if old == new {
		return "none"
	}
	strip := func(s string) string {
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "X-Reload-Triggers=") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	if strip(old) == strip(new) {
		return "reload"
	}
	if parseUnit(new).get("Service", "X-RestartIfChanged") == "false" {
		return "held"
	}
	return "restart"
}

// TestModuleSwitchPlan checks what nixos-rebuild switch does to each
// container from the sample host's first generation to its second: a new
// system or new limits reload the unit (switch in place); a new bind
// mount, a new store closure view or a network change restart it.
func TestModuleSwitchPlan(t *testing.T) {
	for _, ms := range moduleSystems(t) {
		t.Run(ms.name, func(t *testing.T) {
			one, two := evalHost(t, ms, 1), evalHost(t, ms, 2)
			want := map[string]string{"web": "reload", "db": "restart", "veth": "held", "shared": "restart", "lan": "none", "old": "stop"}
			for name, w := range want {
				unit := "nixcell@" + name + ".service"
				if got := change(one.Units[unit], two.Units[unit]); got != w {
					t.Errorf("%s: %s, want %s", name, got, w)
				}
			}
			web, err := spec.Parse(two.Settings["web"])
			if err != nil || web.Limits.MemoryBytes != 1<<30 {
				t.Errorf("web's second generation: memory %d, %v", web.Limits.MemoryBytes, err)
			}
		})
	}
}

// TestModuleRefuses: what nixcell cannot honour is an evaluation error that
// says why; a misspelt or mistyped option too.
func TestModuleRefuses(t *testing.T) {
	cases := []struct{ name, config, want string }{
		{"extraFlags", `c = { config = { }; extraFlags = [ "--private-users=0" ]; };`, "nixcell.containers.c.extraFlags: nixcell does not run systemd-nspawn"},
		{"additionalCapabilities", `c = { config = { }; additionalCapabilities = [ "CAP_NET_ADMIN" ]; };`, "c.additionalCapabilities: nixcell gives every container systemd-nspawn's default capability set"},
		{"interfaces", `c = { config = { }; interfaces = [ "eth1" ]; };`, "c.interfaces: nixcell cannot move host interfaces"},
		{"extraVeths", `c = { config = { }; extraVeths.x = { }; };`, "c.extraVeths: "},
		{"localMacAddress", `c = { config = { }; localMacAddress = "de:b7:73:01:10:90"; };`, "c.localMacAddress: nixcell does not set the MAC address"},
		{"networkNamespace", `c = { config = { }; networkNamespace = "/run/netns/x"; };`, "c.networkNamespace: nixcell cannot join"},
		{"copyResolvConf", `c = { config = { }; copyResolvConf = true; };`, "c.copyResolvConf: nixcell does not copy the host's resolv.conf"},
		{"privateUsers", `c = { config = { }; privateUsers = "no"; };`, "c.privateUsers: nixcell always gives a container an ID range of its own (\"pick\"); for none, as \"no\" means, set privileged = true"},
		{"flake", `c = { flake = "github:x/y"; path = "/nix/store/x"; };`, "c.flake: a declared container comes from config or path"},
		{"tmpfs options", `c = { config = { }; tmpfs = [ "/var:mode=0700" ]; };`, "c.tmpfs: \"/var:mode=0700\": nixcell takes mount points only"},
		{"forwards on the host's network", `c = { config = { }; privateNetwork = false; forwardPorts = [ { hostPort = 1; } ]; };`, "c.forwardPorts: needs privateNetwork = true"},
		{"NAT on the host's network", `c = { config = { }; privateNetwork = false; network.enableNat = true; };`, "c.network.enableNat: needs privateNetwork = true"},
		{"hostAddress on a host bridge", `c = { config = { }; hostBridge = "br0"; hostAddress = "10.0.0.1"; localAddress = "10.0.0.2/24"; };`, "c.hostAddress: with hostBridge"},
		{"nixcell's address on a host bridge", `c = { config = { }; hostBridge = "br0"; network.ip = "10.0.0.2"; };`, "c.network.ip: only for nixcell's own bridges"},
		{"half a veth pair", `c = { config = { }; hostAddress = "10.1.1.1"; };`, "c.hostAddress: hostAddress and localAddress go together"},
		{"NAT with a veth pair", `c = { config = { }; hostAddress = "10.1.1.1"; localAddress = "10.1.1.2"; network.enableNat = true; };`, "c.network.enableNat: a container with a private veth pair"},
		{"ip6 without IPv6", `c = { config = { }; network = { enableIPv6 = false; ip6 = "fd00::5"; }; };`, "c.network.ip6: is set but network.enableIPv6 is false"},
		{"no system", `c = { };`, "nixcell.containers.c.config: set config (a NixOS module) or path (a built system)"},
		{"bad name", `Web_1 = { config = { }; };`, "nixcell.containers.Web_1: \"Web_1\" is not a container name"},
		{"a NAT prefix that is not a /64", `c.config = { }; }; services.nixcell.ipv6 = { prefix = "2001:db8::"; prefixLength = 56; `, "services.nixcell.ipv6.prefixLength: nixcell's NAT bridge takes a /64, not a /56"},
		{"no user namespaces", `c.config = { }; }; security = { allowUserNamespaces = false; `, "need user namespaces"},
		{"not enabled", `c.config = { }; }; services.nixcell = { enable = false; `, "nixcell.containers is set but services.nixcell.enable is false"},
	}
	errors := []struct{ name, config, want string }{
		{"misspelt option", `c = { config = { }; autostart = true; };`, "The option `nixcell.containers.c.autostart' does not exist"},
		{"wrong type", `c = { config = { }; privileged = "yes"; };`, "A definition for option `nixcell.containers.c.privileged' is not of type `boolean'"},
		{"unknown store view", `c = { config = { }; store = "some"; };`, "A definition for option `nixcell.containers.c.store' is not of type"},
		{"config and path", `c = { config = { }; path = "/nix/store/x"; };`, "The option `nixcell.containers.c.path' has conflicting definition"},
	}
	// config is a host configuration with c inside nixcell.containers = {
	// ... }; c may close that and open another attribute set ("}; x = { ").
	config := func(ms moduleSystem, c string) string {
		return `(import ./nix/tests/eval.nix { nixpkgsLib = ` + ms.lib + `; configuration = { nixcell.containers = { ` + c + ` }; }; })`
	}
	for _, ms := range moduleSystems(t) {
		t.Run(ms.name, func(t *testing.T) {
			// One evaluation for all assertion cases.
			var exprs []string
			for _, c := range cases {
				exprs = append(exprs, config(ms, c.config)+".failed")
			}
			var failed [][]string
			eval(t, &failed, "[ "+strings.Join(exprs, " ")+" ]")
			for i, c := range cases {
				if !slices.ContainsFunc(failed[i], func(m string) bool { return strings.Contains(m, c.want) }) {
					t.Errorf("%s: failed assertions %q lack %q", c.name, failed[i], c.want)
				}
			}
			for _, c := range errors {
				if msg := evalError(t, config(ms, c.config)+".units"); !strings.Contains(msg, c.want) {
					t.Errorf("%s: the error lacks %q:\n%s", c.name, c.want, msg)
				}
			}
		})
	}
}

// TestActivationScript runs nixcell's part of the activation (activate.sh)
// on the sample host's units rendered as files, from its first generation
// to its second. No unit runs here, so each changed one is reported as
// applying at its next start; the guest tier checks running ones.
func TestActivationScript(t *testing.T) {
	gen1 := build(t, "(import ./nix/tests/units.nix { }).gen1")
	gen2 := build(t, "(import ./nix/tests/units.nix { }).gen2")
	run := func(env []string, old, new string) string {
		t.Helper()
		out, err := runCmd(env, "sh", "nix/activate.sh", old, new)
		if err != nil {
			t.Fatalf("activate.sh: %v: %s", err, out)
		}
		return out
	}
	units := func(dir string) string { return dir + "/etc/systemd/system" }
	got := run(nil, units(gen1), units(gen2))
	want := "nixcell: changed, not running: applies at its next start: db shared veth web\n" +
		"nixcell: no longer declared, will stop (its state stays; nixcell destroy NAME removes it): old\n"
	if got != want {
		t.Errorf("gen1 -> gen2 says\n%s\nwant\n%s", got, want)
	}
	if got := run([]string{"NIXOS_ACTION=dry-activate"}, units(gen1), units(gen2)); !strings.Contains(got, "would stop") {
		t.Errorf("a dry activation says %q", got)
	}
	if got := run(nil, units(gen2), units(gen2)); got != "" {
		t.Errorf("no change says %q", got)
	}
	if got := run(nil, "/nonexistent", units(gen1)); got != "" {
		t.Errorf("the first activation after boot says %q", got)
	}
	for _, f := range []string{"etc/nixcell/apply-declared", "etc/nixcell/containers/web.conf", "etc/systemd/system/machines.target.wants/nixcell@web.service"} {
		if out, err := runCmd(nil, "test", "-e", gen1+"/"+f); err != nil {
			t.Errorf("rendered units lack %s: %s", f, out)
		}
	}
}

// TestModuleNames: the module accepts exactly the container names nixcell
// does (spec.ValidateName), so a bad name fails at evaluation, not at start.
func TestModuleNames(t *testing.T) {
	names := []string{"web", "a", "a-b", "a1", "x" + strings.Repeat("y", 62), "x" + strings.Repeat("y", 63),
		"1a", "-a", "a-", "A", "Web", "a_b", "a.b", "a b", "ä", "localhost", "tasks", "global"}
	var quoted []string
	for _, n := range names {
		quoted = append(quoted, `"`+n+`"`)
	}
	for _, ms := range moduleSystems(t) {
		t.Run(ms.name, func(t *testing.T) {
			var refused []bool
			eval(t, &refused, `map (n: builtins.any (m: builtins.match ".*is not a container name.*" m != null)
				(import ./nix/tests/eval.nix { nixpkgsLib = `+ms.lib+`; configuration = { nixcell.containers.${n}.config = { }; }; }).failed)
				[ `+strings.Join(quoted, " ")+` ]`)
			for i, n := range names {
				if want := spec.ValidateName(n) != nil; refused[i] != want {
					t.Errorf("%q: the module refuses it: %v; nixcell does: %v", n, refused[i], want)
				}
			}
		})
	}
}
