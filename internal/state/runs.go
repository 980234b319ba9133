package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/lockfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// The run table, RUN/runs.json, is the one record of which containers of
// an instance are starting or running: it says what each booted and with
// which network, and names the process responsible for it (the command
// that starts it, then its init). Everything that depends on which
// containers run (the host's network rules and bridges, the names
// published, the running generation) is computed from it. It lives in the
// run directory, a tmpfs, so a host reboot empties it.
//
// Only the global lock's holder writes it (Store.UpdateRuns); readers take
// no lock (it is replaced whole). Whether a record still holds is decided
// by Run.Holds from the processes it names, never guessed from the
// absence of a file.

// RunPhase is how far a start got.
type RunPhase string

const (
	// Starting: a command is starting the container; its network must be
	// on the host before the init runs. The record holds while that
	// command (Owner) lives, or its init does.
	Starting RunPhase = "starting"
	// Running: its init runs. The record holds while the init (Init)
	// lives.
	Running RunPhase = "running"
)

// Process identifies a process by PID and start time, so that a recycled
// PID is never taken for it.
type Process struct {
	Pid       int       `json:"pid"`
	StartedAt time.Time `json:"startedAt"`
}

// Valid tells whether p names a process.
func (p Process) Valid() bool { return p.Pid > 0 }

// Run is one container's record in the run table.
type Run struct {
	Phase RunPhase `json:"phase"`
	// Owner is the command that starts the container (while Starting).
	Owner Process `json:"owner,omitzero"`
	// Init is the container's init once it exists.
	Init Process `json:"init,omitzero"`
	// Generation and System are what its init booted, or what it was last
	// switched to in place (0 and "" for a plain root file system).
	Generation int    `json:"generation,omitempty"`
	System     string `json:"system,omitempty"`
	// Switching is the system a switch in place was begun to and not
	// recorded as done (a killed update or rollback): what the init runs
	// is then System, Switching or a mix of both, so the next switch must
	// run whatever System says.
	Switching string `json:"switching,omitempty"`
	// Network is the network it started with: its settings, plus the
	// forwards of this run alone (a Nomad allocation's ports).
	Network spec.Network `json:"network"`
	// NetNS is the network namespace it joined instead of having nixcell's
	// networking (a Nomad allocation's); nixcell sets up none for it.
	NetNS string `json:"netns,omitempty"`
}

// Holds tells whether the record still describes a live container: its
// init lives, or, while it starts, the command starting it does. alive
// says whether a process lives.
func (r Run) Holds(alive func(Process) bool) bool {
	if r.Init.Valid() && alive(r.Init) {
		return true
	}
	return r.Phase == Starting && r.Owner.Valid() && alive(r.Owner)
}

// Runs is the run table: container name to its record.
type Runs map[string]Run

func (s Store) runsPath() string { return filepath.Join(s.Run, "runs.json") }

// RunsPath is the run table's file, for those who watch it change.
func (s Store) RunsPath() string { return s.runsPath() }

// LoadRuns reads the run table; a missing one is empty. It is written
// without syncs (what runs does not outlive the machine), so after a
// machine crash it may be empty or torn: that too reads as empty, which
// it is then.
func (s Store) LoadRuns() (Runs, error) {
	runs := Runs{}
	data, err := os.ReadFile(s.runsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return Runs{}, nil
	}
	if err != nil {
		return nil, err
	}
	// A table of "null" decodes as a nil map, which no start could add to.
	if json.Unmarshal(data, &runs) != nil || runs == nil {
		return Runs{}, nil
	}
	return runs, nil
}

// MayHaveRun tells, without decoding the table, whether it may hold a
// record of name: false is sure, true means it may (LoadRuns tells). A
// command on a stopped container asks it of every run table, which holds
// a record per running container. A record's key is the name quoted and
// followed by a colon; names need no escaping in JSON.
func (s Store) MayHaveRun(name string) (bool, error) {
	data, err := os.ReadFile(s.runsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Contains(data, []byte(strconv.Quote(name)+":")), nil
}

// SaveRuns replaces the run table, making the run directory if needed
// (container users must be able to search it: 0711). Preconditions: the
// global lock is held.
func (s Store) SaveRuns(runs Runs) error {
	if err := os.MkdirAll(s.Run, 0o711); err != nil {
		return err
	}
	return atomicfile.WriteVolatileJSON(s.runsPath(), runs, 0o600)
}

// NameServerLockPath is held by the instance's name server while it runs.
func (s Store) NameServerLockPath() string { return filepath.Join(s.Run, "dns.lock") }

// NameServerTablePath is what the instance's name server serves, while a
// container runs (see network.WriteNameTable).
func (s Store) NameServerTablePath() string { return filepath.Join(s.Run, "dns.table") }

// NetworkAppliedPath keeps the digest of the rules the instance last
// applied (network.Store.AppliedPath).
func (s Store) NetworkAppliedPath() string { return filepath.Join(s.Run, "network.applied") }

// ConsoleSocketPath and ConsoleLockPath are the console agent's socket
// and lock (see internal/console).
func (s Store) ConsoleSocketPath() string { return filepath.Join(s.Run, "console.sock") }
func (s Store) ConsoleLockPath() string   { return filepath.Join(s.Run, "console.lock") }

// RemoveRunIfEmpty removes the instance's run directory when it holds
// nothing: no container's runtime state or host directory, an empty run
// table, no name server or console agent running (each removes the
// directory as it leaves, when it is the last thing there). What is not
// empty stays.
// Preconditions: the global lock is held and no container of the instance
// exists (so no start makes anything there meanwhile).
func (s Store) RemoveRunIfEmpty() error {
	runs, err := s.LoadRuns()
	if err != nil || len(runs) > 0 {
		return err
	}
	// The name server leaves once the run table is empty, a moment later:
	// it removes its lock, and the directory once empty, as it leaves. A
	// killed one left its lock.
	if _, err := os.Stat(s.NameServerLockPath()); err == nil {
		if ns, err := lockfile.TryLock(s.NameServerLockPath()); err == nil {
			if err := ns.Remove(); err != nil {
				return err
			}
		}
	}
	for _, f := range []string{s.NameServerTablePath(), s.runsPath(), s.NetworkAppliedPath()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := atomicfile.RemoveLeftovers(f); err != nil {
			return err
		}
	}
	// The console agent outlives the last console it kept by a moment; it
	// removes its files, and the directory once empty, as it leaves. A
	// killed one left them.
	if _, err := os.Stat(s.ConsoleLockPath()); err == nil {
		if agent, err := lockfile.TryLock(s.ConsoleLockPath()); err == nil {
			if err := os.Remove(s.ConsoleSocketPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				agent.Unlock()
				return err
			}
			if err := agent.Remove(); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{s.RuntimeRoot(), filepath.Join(s.Run, "host"), s.Run} {
		err := os.Remove(d)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}
