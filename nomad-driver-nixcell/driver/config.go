package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	"github.com/nixcell/nixcell/internal/cell"
)

// DefaultStateDir is the driver's own nixcell state directory, apart from
// the default instance's (/var/lib/nixcell), so that the containers it
// makes never meet a user's.
const DefaultStateDir = "/var/lib/nixcell-nomad"

// configSpec is the plugin's configuration in the agent's
// plugin "nixcell" { config { ... } } block.
var configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"state_dir": hclspec.NewDefault(hclspec.NewAttr("state_dir", "string", false),
		hclspec.NewLiteral(fmt.Sprintf("%q", DefaultStateDir))),
	// Passed to Nix for every task, before the task's own nix_args (for
	// example -I nixpkgs=/src/nixpkgs).
	"nix_args": hclspec.NewAttr("nix_args", "list(string)", false),
	// Tasks may set privileged = true only when this is true.
	"allow_privileged": hclspec.NewDefault(hclspec.NewAttr("allow_privileged", "bool", false),
		hclspec.NewLiteral("false")),
	// The IPv4 subnets of the driver's bridges, when its network is first
	// made: apart from the default instance's (10.101.0.0/16 and
	// 10.102.0.0/16), since two networks of one subnet on a host break
	// each other.
	"hostonly_subnet": hclspec.NewDefault(hclspec.NewAttr("hostonly_subnet", "string", false),
		hclspec.NewLiteral(fmt.Sprintf("%q", DefaultHostOnlySubnet))),
	"nat_subnet": hclspec.NewDefault(hclspec.NewAttr("nat_subnet", "string", false),
		hclspec.NewLiteral(fmt.Sprintf("%q", DefaultNATSubnet))),
})

// The driver's default subnets, apart from the default instance's.
const (
	DefaultHostOnlySubnet = "10.103.0.0/16"
	DefaultNATSubnet      = "10.104.0.0/16"
)

// Config is the plugin's configuration.
type Config struct {
	StateDir        string   `codec:"state_dir"`
	NixArgs         []string `codec:"nix_args"`
	AllowPrivileged bool     `codec:"allow_privileged"`
	HostOnlySubnet  string   `codec:"hostonly_subnet"`
	NATSubnet       string   `codec:"nat_subnet"`
}

// network is the nixcell network configuration of c's subnets, the
// driver's defaults for those it leaves empty.
func (c Config) network() (cell.NetworkConfig, error) {
	var n cell.NetworkConfig
	for _, f := range []struct {
		option, value, def string
		to                 *netip.Prefix
	}{
		{"hostonly_subnet", c.HostOnlySubnet, DefaultHostOnlySubnet, &n.HostOnlySubnet},
		{"nat_subnet", c.NATSubnet, DefaultNATSubnet, &n.NATSubnet},
	} {
		v := f.value
		if v == "" {
			v = f.def
		}
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return n, fmt.Errorf("%s %q is not an IPv4 subnet (such as %s)", f.option, v, f.def)
		}
		*f.to = p
	}
	return n, nil
}

// taskConfigSpec is a task's config { ... } block.
var taskConfigSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	// The container's system: exactly one of these four.
	"system":      hclspec.NewAttr("system", "string", false),
	"flake":       hclspec.NewAttr("flake", "string", false),
	"config_file": hclspec.NewAttr("config_file", "string", false),
	"config":      hclspec.NewAttr("config", "string", false),

	"nix_args": hclspec.NewAttr("nix_args", "list(string)", false),
	"privileged": hclspec.NewDefault(hclspec.NewAttr("privileged", "bool", false),
		hclspec.NewLiteral("false")),
	"pids": hclspec.NewAttr("pids", "number", false),
	"cpu_hard_limit": hclspec.NewDefault(hclspec.NewAttr("cpu_hard_limit", "bool", false),
		hclspec.NewLiteral("false")),
})

// TaskConfig is a task's config block.
type TaskConfig struct {
	System     string `codec:"system"`
	Flake      string `codec:"flake"`
	ConfigFile string `codec:"config_file"`
	Config     string `codec:"config"`

	NixArgs      []string `codec:"nix_args"`
	Privileged   bool     `codec:"privileged"`
	Pids         int64    `codec:"pids"`
	CPUHardLimit bool     `codec:"cpu_hard_limit"`
}

// source checks that exactly one system source is given and returns it;
// a relative config_file is relative to the task directory taskDir (so a
// template or an artifact can provide it).
func (tc TaskConfig) source(taskDir string) (source, error) {
	n := 0
	for _, s := range []string{tc.System, tc.Flake, tc.ConfigFile, tc.Config} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return source{}, fmt.Errorf("give exactly one of system (a store path), flake (REF#NAME), config_file or config (a Nix expression); %d given", n)
	}
	s := source{SystemPath: tc.System, Flake: tc.Flake, ConfigFile: tc.ConfigFile, Expr: tc.Config}
	if s.ConfigFile != "" && !filepath.IsAbs(s.ConfigFile) {
		s.ConfigFile = filepath.Join(taskDir, s.ConfigFile)
	}
	return s, nil
}

// containerName is the nixcell name of the container of one task of one
// allocation: unique per allocation and task, a valid nixcell name (a DNS
// label of at most 63 characters), and recognisable in nixcell list.
func containerName(allocID, task string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(task) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	clean := strings.Trim(b.String(), "-")
	alloc := allocID
	if len(alloc) > 8 {
		alloc = alloc[:8]
	}
	const maxTask = 63 - len("nomad-12345678-") - len("-1234")
	if clean != task || len(clean) > maxTask {
		// Task names differing only in what a name cannot hold stay apart.
		sum := sha256.Sum256([]byte(task))
		if len(clean) > maxTask {
			clean = strings.TrimRight(clean[:maxTask], "-")
		}
		clean += "-" + hex.EncodeToString(sum[:2])
	}
	return "nomad-" + alloc + "-" + clean
}
