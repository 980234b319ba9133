package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
)

// pluginBin is the driver plugin under test, built once by TestMain (or
// given as $NIXCELL_NOMAD_DRIVER).
var pluginBin string

func TestMain(m *testing.M) {
	code := func() int {
		if p := os.Getenv("NIXCELL_NOMAD_DRIVER"); p != "" {
			pluginBin = p
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "nomad-driver-nixcell-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pluginBin = filepath.Join(dir, "nixcell")
		build := exec.Command("bash", filepath.Join(projectRoot(), "scripts", "build-nomad-driver.sh"), pluginBin)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the driver:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// instance is one isolated run of the driver: its own nixcell state
// directory and subnets.
type instance struct {
	t   *testing.T
	dir string
	env []string // the plugin's environment
}

// newInstance gives the test its own state directory and, when the test
// ends, destroys whatever containers are left in it and checks that
// nothing of its network remains on the host.
func newInstance(t *testing.T) *instance {
	t.Helper()
	requireHost(t)
	in := &instance{t: t, dir: stateDir(t)}
	in.env = append(os.Environ(), subnetEnv(t)...)
	t.Cleanup(func() {
		for _, n := range in.containers() {
			t.Errorf("leaked after the test: container %s", n)
			if out, err := in.nixcell("destroy", "--timeout", "5s", n); err != nil {
				t.Errorf("cleanup: destroy %s: %v: %s", n, err, out)
			}
		}
		id := instanceID(in.dir)
		for _, fam := range []string{"inet", "bridge"} {
			if exec.Command("nft", "list", "table", fam, "nixcell-"+id).Run() == nil {
				t.Errorf("leaked after the test: nft table %s nixcell-%s", fam, id)
				_ = exec.Command("nft", "delete", "table", fam, "nixcell-"+id).Run()
			}
		}
		for _, br := range []string{"nch-" + id, "ncn-" + id} {
			if exec.Command("ip", "link", "show", br).Run() == nil {
				t.Errorf("leaked after the test: bridge %s", br)
				_ = exec.Command("ip", "link", "del", br).Run()
			}
		}
		_ = os.RemoveAll("/run/nixcell-" + id)
	})
	return in
}

// nixcell runs nixcell's command line (which the plugin binary is, with
// arguments) on the instance's state directory.
func (in *instance) nixcell(args ...string) (string, error) {
	cmd := exec.Command(pluginBin, append([]string{"--state-dir", in.dir}, args...)...)
	cmd.Env = in.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// containers lists the instance's containers.
func (in *instance) containers() []string {
	out, err := in.nixcell("list", "--json")
	if err != nil {
		in.t.Errorf("nixcell list: %v: %s", err, out)
		return nil
	}
	var list []struct{ Name string }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		in.t.Errorf("nixcell list: %v: %s", err, out)
	}
	var names []string
	for _, c := range list {
		names = append(names, c.Name)
	}
	return names
}

// subnets are the instance's own subnets (subnetEnv's), which the plugin
// is configured with.
func (in *instance) subnets() (hostOnly, nat string) {
	for _, kv := range in.env {
		if v, ok := strings.CutPrefix(kv, "NIXCELL_HOSTONLY_SUBNET="); ok {
			hostOnly = v
		}
		if v, ok := strings.CutPrefix(kv, "NIXCELL_NAT_SUBNET="); ok {
			nat = v
		}
	}
	return hostOnly, nat
}

// pluginConfig is the plugin's configuration for the instance.
func (in *instance) pluginConfig() []byte {
	var b []byte
	hostOnly, nat := in.subnets()
	err := base.MsgPackEncode(&b, map[string]any{
		"state_dir":       in.dir,
		"nix_args":        []string{"-I", "nixpkgs=" + fixtureNixpkgs()},
		"hostonly_subnet": hostOnly,
		"nat_subnet":      nat,
	})
	if err != nil {
		in.t.Fatal(err)
	}
	return b
}

// pluginProc is a running driver plugin process, reached as Nomad reaches it.
type pluginProc struct {
	client *plugin.Client
	driver drivers.DriverPlugin
}

// startPlugin launches the plugin process and configures it.
func (in *instance) startPlugin() *pluginProc {
	in.t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = in.env
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: base.Handshake,
		Plugins: map[string]plugin.Plugin{
			base.PluginTypeBase:   &base.PluginBase{},
			base.PluginTypeDriver: drivers.NewDriverPlugin(nil, hclog.NewNullLogger()),
		},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: os.Stderr}),
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		in.t.Fatalf("starting the plugin: %v", err)
	}
	raw, err := rpc.Dispense(base.PluginTypeDriver)
	if err != nil {
		client.Kill()
		in.t.Fatalf("dispensing the driver: %v", err)
	}
	p := &pluginProc{client: client, driver: raw.(drivers.DriverPlugin)}
	in.t.Cleanup(p.client.Kill)
	if err := p.driver.SetConfig(&base.Config{PluginConfig: in.pluginConfig(), AgentConfig: &base.AgentConfig{Driver: &base.ClientDriverConfig{}}}); err != nil {
		in.t.Fatalf("configuring the plugin: %v", err)
	}
	return p
}
