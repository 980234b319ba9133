package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// DefaultHostPortsPath is the host-wide registry of forwarded host ports,
// beside the host-wide registry of ID ranges (idmap): an instance's
// network state keeps its own containers from forwarding one port twice,
// and this keeps two instances on one host from doing so.
const DefaultHostPortsPath = "/var/lib/nixcell-ids/ports.json"

// hostPorts is that file: the port claims of every instance, by the
// instance's state directory, then container. Only ever replaced whole.
type hostPorts struct {
	Instances map[string]map[string][]spec.PortForward `json:"instances"`
}

// syncHostPorts records claims as the instance's (its state directory) in
// the registry at path, under the registry's lock. A forward the instance
// did not hold there before is refused when another instance's container
// forwards the same port: what the instance held before (or gives up)
// always passes, so a release never fails. Instances whose state
// directory is gone are dropped.
func syncHostPorts(ctx context.Context, path, instance string, claims map[string][]spec.PortForward) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("host port registry: %w", err)
	}
	lock, err := lockfile.Lock(ctx, strings.TrimSuffix(path, ".json")+".lock")
	if err != nil {
		return fmt.Errorf("host port registry: %w", err)
	}
	defer lock.Unlock()
	var reg hostPorts
	if err := atomicfile.ReadJSON(path, &reg); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("host port registry %s: %w", path, err)
	}
	if reg.Instances == nil {
		reg.Instances = map[string]map[string][]spec.PortForward{}
	}
	held := reg.Instances[instance]
	for _, other := range sortedNames(reg.Instances) {
		if other == instance {
			continue
		}
		if _, err := os.Stat(other); errors.Is(err, fs.ErrNotExist) {
			delete(reg.Instances, other)
			continue
		}
		for _, name := range sortedNames(claims) {
			for _, f := range claims[name] {
				if isHeld(held[name], f) {
					continue
				}
				for _, theirs := range sortedNames(reg.Instances[other]) {
					for _, g := range reg.Instances[other][theirs] {
						if collide(f, g) {
							return fmt.Errorf("%w: %s port %d is forwarded to container %q of the nixcell instance at %s", ErrPortInUse, f.Protocol, f.HostPort, theirs, other)
						}
					}
				}
			}
		}
	}
	if len(claims) == 0 {
		delete(reg.Instances, instance)
	} else {
		reg.Instances[instance] = claims
	}
	return atomicfile.WriteJSON(path, reg, 0o600)
}

// isHeld tells whether forwards holds f.
func isHeld(forwards []spec.PortForward, f spec.PortForward) bool {
	for _, g := range forwards {
		if g == f {
			return true
		}
	}
	return false
}
