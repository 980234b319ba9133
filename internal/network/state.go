package network

import (
	"bytes"
	"context"
	"encoding/json"
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
	// Applied is a digest of the rules last applied, so Apply can skip nft
	// when nothing changed.
	Applied string `json:"applied,omitempty"`
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
	// HostPorts is the host-wide registry of forwarded ports
	// (DefaultHostPortsPath), which every instance on a host shares; the
	// instance is named there by its state directory, Instance. Empty: no
	// check across instances (tests of this package alone).
	HostPorts, Instance string
}

// Load reads the state; an instance that never had a network gets fresh
// settings (not yet saved).
func (s Store) Load() (State, error) {
	var st State
	err := atomicfile.ReadJSON(s.Path, &st)
	if errors.Is(err, fs.ErrNotExist) {
		st.Settings, err = NewSettings(s.ID, s.Config)
	} else if err == nil {
		if err = st.Settings.check(); err != nil {
			err = fmt.Errorf("%s: %w; repair its settings", s.Path, err)
		}
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
	ports, _ := json.Marshal(st.Ports)
	if err := f(&st); err != nil {
		return err
	}
	// Most starts and stops change nothing of it: no write, no sync.
	if after, _ := json.Marshal(st); bytes.Equal(before, after) {
		return nil
	}
	if after, _ := json.Marshal(st.Ports); s.HostPorts != "" && !bytes.Equal(ports, after) {
		if err := syncHostPorts(ctx, s.HostPorts, s.Instance, st.Ports); err != nil {
			return err
		}
	}
	return atomicfile.WriteJSON(s.Path, st, 0o600)
}
