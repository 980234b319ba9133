package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// State is what an instance stores of its network, in one file:
//
//	{"settings": {...}, "addresses": {"web": {"hostOnly4": "10.101.0.2", ...}}}
//
// Addresses are held from a container's create to its destroy, so they
// stay the same across stops, updates and host reboots.
type State struct {
	Settings  Settings             `json:"settings"`
	Addresses map[string]Addresses `json:"addresses"`
	// Ports are the host ports each container forwards, claimed at create
	// and update so no two containers forward the same one.
	Ports map[string][]spec.PortForward `json:"ports,omitempty"`
	// Active are the containers whose network is set up on the host (they
	// run, or ran until they died on their own), with the settings they
	// started with: what Sync converges to.
	Active map[string]spec.Network `json:"active,omitempty"`
	// Applied is a digest of the rules last applied, so Sync can skip nft
	// when nothing changed.
	Applied string `json:"applied,omitempty"`
}

// Desired is what Sync should converge the host to for this state.
func (st *State) Desired(uplink string) Desired {
	d := Desired{Settings: st.Settings, Uplink: uplink}
	for _, a := range st.Addresses {
		d.KeepHostOnly = d.KeepHostOnly || a.HostOnly4.IsValid()
		d.KeepNAT = d.KeepNAT || a.NAT4.IsValid()
	}
	for _, name := range sortedNames(st.Active) {
		n, a := st.Active[name], st.Addresses[name]
		d.Containers = append(d.Containers, Running{Name: name, Plan: st.Settings.PlanFor(name, n, a), Addresses: a, Network: n})
	}
	return d
}

// ErrPortInUse means another container forwards the same host port.
var ErrPortInUse = errors.New("host port already forwarded")

// ClaimPorts records the container's forwarded host ports, refusing any
// that another container forwards. Two forwards collide when protocol and
// port match and their host addresses are equal or either is "every
// address".
func (st *State) ClaimPorts(name string, ports []spec.PortForward) error {
	for _, other := range sortedNames(st.Ports) {
		if other == name {
			continue
		}
		for _, f := range ports {
			for _, g := range st.Ports[other] {
				sameAddr := f.HostAddress == g.HostAddress || !f.HostAddress.IsValid() || !g.HostAddress.IsValid()
				if f.Protocol == g.Protocol && f.HostPort == g.HostPort && sameAddr {
					return fmt.Errorf("%w: %s port %d is forwarded to container %q", ErrPortInUse, f.Protocol, f.HostPort, other)
				}
			}
		}
	}
	if st.Ports == nil {
		st.Ports = map[string][]spec.PortForward{}
	}
	if len(ports) == 0 {
		delete(st.Ports, name)
	} else {
		st.Ports[name] = ports
	}
	return nil
}

// Store keeps an instance's State.
type Store struct {
	Path     string // the state file
	LockPath string // nixcell's global allocation lock
	// ID tells isolated instances apart in interface and table names ("" for
	// the default instance).
	ID string
}

// Load reads the state; an instance that never had a network gets fresh
// settings (not yet saved).
func (s Store) Load() (State, error) {
	var st State
	err := atomicfile.ReadJSON(s.Path, &st)
	if errors.Is(err, fs.ErrNotExist) {
		st.Settings, err = NewSettings(s.ID)
	}
	if err != nil {
		return st, fmt.Errorf("network state: %w", err)
	}
	if st.Addresses == nil {
		st.Addresses = map[string]Addresses{}
	}
	return st, nil
}

// Update runs f on the state under the global lock and saves the result
// if f succeeds. f may run Sync: the lock serializes every change to the
// host's network.
func (s Store) Update(ctx context.Context, f func(*State) error) error {
	lock, err := lockfile.Lock(ctx, s.LockPath)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	st, err := s.Load()
	if err != nil {
		return err
	}
	if err := f(&st); err != nil {
		return err
	}
	return atomicfile.WriteJSON(s.Path, st, 0o600)
}
