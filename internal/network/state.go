package network

import (
	"bytes"
	"context"
	"encoding/json"
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
	// when nothing changed. It describes the kernel's rules, which a
	// reboot loses, and changes with every start and stop: it is kept in
	// the run directory (Store.AppliedPath), so those need no durable
	// write of the state file.
	Applied string `json:"-"`
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
	// AppliedPath keeps State.Applied, in the instance's run directory
	// ("": nowhere, and Apply runs nft every time).
	AppliedPath string
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
	st.Applied = s.loadApplied()
	return st, nil
}

// loadApplied reads the digest AppliedPath keeps: "" (nft runs) when
// there is none or it is not one.
func (s Store) loadApplied() string {
	if s.AppliedPath == "" {
		return ""
	}
	data, err := os.ReadFile(s.AppliedPath)
	if err != nil {
		return ""
	}
	d := strings.TrimSpace(string(data))
	if len(d) > 128 || strings.Trim(d, "0123456789abcdef") != "" {
		return ""
	}
	return d
}

// saveApplied keeps the digest d, written atomically in the run
// directory (the host's tmpfs, which a reboot clears with the rules, so
// its sync costs nothing and keeps nothing), or removed when it cannot be
// written, so that the next change runs nft.
func (s Store) saveApplied(d string) {
	if s.AppliedPath == "" {
		return
	}
	if d != "" {
		if err := os.MkdirAll(filepath.Dir(s.AppliedPath), 0o711); err == nil {
			if atomicfile.WriteFile(s.AppliedPath, []byte(d+"\n"), 0o600) == nil {
				return
			}
		}
	}
	_ = os.Remove(s.AppliedPath)
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
	applied := st.Applied
	if err := f(&st); err != nil {
		return err
	}
	if st.Applied != applied {
		s.saveApplied(st.Applied)
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
