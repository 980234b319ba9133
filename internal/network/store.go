package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"

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
	// Applied is a digest of the rules last applied, so Apply can skip nft
	// when nothing changed.
	Applied string `json:"applied,omitempty"`
}

// Member is a container whose network must be on the host, because it
// runs or is starting, with the network settings it started with. Which
// containers these are is the run table's to say (state.Runs), not this
// file's.
type Member struct {
	Name    string
	Network spec.Network
}

// Host is what Apply needs to know of the host besides the state.
type Host struct {
	// Uplink is the interface NAT traffic leaves by; "" finds the
	// interface of the default route.
	Uplink string
	// HostsFile is where container names are published; "" is /etc/hosts.
	HostsFile string
}

// Desired is what the host must look like for members to run.
func (st *State) Desired(members []Member, host Host) Desired {
	d := Desired{Settings: st.Settings, Uplink: host.Uplink, HostsFile: host.HostsFile}
	if d.HostsFile == "" {
		d.HostsFile = "/etc/hosts"
	}
	for _, a := range st.Addresses {
		d.KeepHostOnly = d.KeepHostOnly || a.HostOnly4.IsValid()
		d.KeepNAT = d.KeepNAT || a.NAT4.IsValid()
	}
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range members {
		a := st.Addresses[m.Name]
		d.Containers = append(d.Containers, Planned{Name: m.Name, Plan: st.Settings.PlanFor(m.Name, m.Network, a), Addresses: a, Network: m.Network})
	}
	return d
}

// ErrPortInUse means another container forwards the same host port.
var ErrPortInUse = fault.New(fault.Conflict, "host port already forwarded")

// ClaimPorts records the container's forwarded host ports, refusing any
// that another container forwards. Two forwards collide when protocol and
// port match and their host addresses are equal or either is "every
// address".
func (st *State) ClaimPorts(name string, ports []spec.PortForward) error {
	if err := CheckPorts(name, ports, st.Ports); err != nil {
		return err
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

// CheckPorts refuses forwards of the container name that collide with
// those claims holds for other containers. Two forwards collide when
// protocol and port match and their host addresses are equal or either is
// "every address".
func CheckPorts(name string, ports []spec.PortForward, claims map[string][]spec.PortForward) error {
	for _, other := range sortedNames(claims) {
		if other == name {
			continue
		}
		for _, f := range ports {
			for _, g := range claims[other] {
				sameAddr := f.HostAddress == g.HostAddress || !f.HostAddress.IsValid() || !g.HostAddress.IsValid()
				if f.Protocol == g.Protocol && f.HostPort == g.HostPort && sameAddr {
					return fmt.Errorf("%w: %s port %d is forwarded to container %q", ErrPortInUse, f.Protocol, f.HostPort, other)
				}
			}
		}
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
	// Config shapes the settings of an instance that has none yet.
	Config Config
}

// Load reads the state; an instance that never had a network gets fresh
// settings (not yet saved).
func (s Store) Load() (State, error) {
	var st State
	err := atomicfile.ReadJSON(s.Path, &st)
	if errors.Is(err, fs.ErrNotExist) {
		st.Settings, err = NewSettings(s.ID, s.Config)
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
// if f succeeds. f may run Apply: the lock serializes every change to the
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
	before, _ := json.Marshal(st)
	if err := f(&st); err != nil {
		return err
	}
	// Most starts and stops change nothing of it: no write, no sync.
	if after, _ := json.Marshal(st); bytes.Equal(before, after) {
		return nil
	}
	return atomicfile.WriteJSON(s.Path, st, 0o600)
}
