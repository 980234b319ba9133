package nixfiles

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

// specToModule maps the settings nixcell reads (internal/spec, by JSON
// name) to the options of nixcell.containers.<name> that set them, where
// the names differ. A mapped prefix maps everything below it. Every other
// setting must have an option of its own name.
var specToModule = map[string]string{
	"autostart":              "autoStart",      // as the unit's wantedBy; the settings say false
	"network.bridge":         "hostBridge",     // with localAddress(6) as network.ip(6)
	"network.hostNetwork":    "privateNetwork", // negated
	"network.noIPv6":         "network.enableIPv6",
	"network.hostAddress":    "hostAddress",
	"network.localAddress":   "localAddress",
	"network.hostAddress6":   "hostAddress6",
	"network.localAddress6":  "localAddress6",
	"network.macvlans":       "macvlans",
	"network.forwardPorts":   "forwardPorts",
	"bindMounts.destination": "bindMounts.mountPoint", // and the attribute name
	"limits.memoryBytes":     "limits.memory",
	"limits.diskBytes":       "limits.disk",
}

// moduleOnly are the options that set no host-side setting, and why.
var moduleOnly = map[string]string{
	"config":           "the container's system, a generation of its profile",
	"path":             "the container's system, a generation of its profile",
	"nixpkgs":          "how config is evaluated",
	"specialArgs":      "how config is evaluated",
	"timeoutStartSec":  "the unit's",
	"restartIfChanged": "the unit's",
	"enableTun":        "adds /dev/net/tun to allowedDevices",
	// nixos-container's, refused with a reason (containers.nix: unsupported).
	"additionalCapabilities": "refused", "extraFlags": "refused", "extraVeths": "refused",
	"interfaces": "refused", "localMacAddress": "refused", "networkNamespace": "refused",
	"copyResolvConf": "refused", "privateUsers": "refused", "flake": "refused",
}

// specPaths lists the settings a type holds, by JSON name ("network.ip"),
// with struct and slice-of-struct fields' own fields below them. Addresses
// (net/netip) are single settings.
func specPaths(t reflect.Type, prefix string, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := prefix + name
		out[p] = true
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() != "net/netip" {
			specPaths(ft, p+".", out)
		}
	}
}

// moduleName is the option that sets the setting p.
func moduleName(p string) string {
	if m, ok := specToModule[p]; ok {
		return m
	}
	best := ""
	for k := range specToModule {
		if strings.HasPrefix(p, k+".") && len(k) > len(best) {
			best = k
		}
	}
	if best != "" {
		return specToModule[best] + strings.TrimPrefix(p, best)
	}
	return p
}

type optionTree map[string]struct {
	Type string     `json:"type"`
	Sub  optionTree `json:"sub"`
}

func (o optionTree) paths(prefix string, out map[string]bool) {
	for name, opt := range o {
		out[prefix+name] = true
		opt.Sub.paths(prefix+name+".", out)
	}
}

// TestOptionsMatchSpec keeps the module's container options and nixcell's
// settings (internal/spec) from drifting apart: every setting has an option
// that sets it, and every option sets a setting or is listed in moduleOnly
// with the reason. When it fails after a change to internal/spec, add the
// option to nix/containers.nix (declaration and `settings`), or map it above.
func TestOptionsMatchSpec(t *testing.T) {
	settings := map[string]bool{}
	specPaths(reflect.TypeOf(spec.Spec{}), "", settings)
	for _, ms := range moduleSystems(t) {
		t.Run(ms.name, func(t *testing.T) {
			var tree optionTree
			eval(t, &tree, hostExpr(ms, 1, ".options"))
			options := map[string]bool{}
			tree.paths("", options)

			set := map[string]bool{}
			for _, p := range sorted(settings) {
				m := moduleName(p)
				set[m] = true
				if !options[m] {
					t.Errorf("setting %s (internal/spec) has no option nixcell.containers.<name>.%s: add it to nix/containers.nix (options and settings), or map it in nix/options_test.go", p, m)
				}
			}
			for _, o := range sorted(options) {
				if !set[o] && moduleOnly[o] == "" {
					t.Errorf("option nixcell.containers.<name>.%s sets no setting of internal/spec: map it in nix/options_test.go, list it in moduleOnly with the reason, or remove it", o)
				}
			}
			for o := range moduleOnly {
				if !options[o] {
					t.Errorf("moduleOnly lists %s, which is no option", o)
				}
			}
			for p := range specToModule {
				if !settings[p] {
					t.Errorf("specToModule maps %s, which is no setting of internal/spec", p)
				}
			}
		})
	}
}

func sorted(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
