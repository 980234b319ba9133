package cell

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/runtime"
)

// A checkpoint of a container, in its state directory, which only the
// host can reach:
//
//	STATE/containers/NAME/checkpoint/           CRIU's images
//	STATE/containers/NAME/checkpoint.json       what it is of (CheckpointInfo)
//	STATE/containers/NAME/checkpoint.work/      CRIU's log of the checkpoint
//	STATE/containers/NAME/checkpoint.restore/   CRIU's log of the last restore
//
// checkpoint.json is written last and removed first, so a checkpoint is
// there exactly when it is.

// CheckpointInfo describes a checkpoint.
type CheckpointInfo struct {
	CreatedAt time.Time `json:"createdAt"`
	// Generation and System are what the container ran: a restore needs
	// them to be current.
	Generation int    `json:"generation"`
	System     string `json:"system"`
	TCP        bool   `json:"tcp"`
	// CRIU is the version that made it.
	CRIU string `json:"criu"`
}

// ErrNoCheckpoint is the class of containers without a checkpoint.
var ErrNoCheckpoint = fault.New(fault.NotFound, "no checkpoint")

// ErrStaleCheckpoint is the class of checkpoints of a generation that is
// no longer current.
var ErrStaleCheckpoint = fault.New(fault.State, "the checkpoint is of another generation")

func (m *Manager) checkpointDir(name string) string {
	return filepath.Join(m.Store.Dir(name), "checkpoint")
}
func (m *Manager) checkpointInfoPath(name string) string {
	return filepath.Join(m.Store.Dir(name), "checkpoint.json")
}

// removeCheckpoint removes a checkpoint and what CRIU wrote beside it.
func (m *Manager) removeCheckpoint(name string) error {
	if err := os.Remove(m.checkpointInfoPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, d := range []string{"", ".work", ".restore"} {
		if err := os.RemoveAll(m.checkpointDir(name) + d); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint saves the running container's processes (their memory, open
// files, and with tcp their established TCP connections) with CRIU and
// stops it; RestoreCheckpoint brings them back. CRIU must be able to run
// on this kernel (criu check): if it cannot, or if it refuses the
// container, the error is CRIU's reason and the container keeps running.
func (m *Manager) Checkpoint(ctx context.Context, name string, tcp bool) (info CheckpointInfo, retErr error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Checkpoint)
	if err != nil {
		return info, err
	}
	defer unlock()
	if err := copyable(rec); err != nil {
		return info, err
	}
	if info.CRIU, err = runtime.CheckCRIU(); err != nil {
		return info, fmt.Errorf("no checkpoint taken, it keeps running: %w", err)
	}
	if err := m.removeCheckpoint(name); err != nil {
		return info, err
	}
	run, ok, err := m.runningOf(rec)
	if err != nil {
		return info, err
	}
	if !ok {
		return info, fmt.Errorf("%s runs, but its run record is gone; restart it before a checkpoint", name)
	}
	info.CreatedAt, info.Generation, info.System, info.TCP = time.Now().UTC(), run.Generation, run.System, tcp
	if err := failpoint.Hit("checkpoint/checked"); err != nil {
		return info, err
	}
	if err := runtime.Checkpoint(m.Store.RuntimeRoot(), name, runtime.CheckpointOptions{Dir: m.checkpointDir(name), TCP: tcp}); err != nil {
		// CRIU's log stays, for a look: the next checkpoint removes it.
		if rerr := os.RemoveAll(m.checkpointDir(name)); rerr != nil {
			m.warnf("removing the failed checkpoint: %v", rerr)
		}
		return info, err
	}
	// It is stopped now: its network goes as a stop's does.
	if err := m.netStop(ctx, name, false); err != nil {
		return info, err
	}
	return info, atomicfile.WriteJSON(m.checkpointInfoPath(name), info, 0o600)
}

// CheckpointOf reports the container's checkpoint.
func (m *Manager) CheckpointOf(name string) (CheckpointInfo, error) {
	var info CheckpointInfo
	err := atomicfile.ReadJSON(m.checkpointInfoPath(name), &info)
	if errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("%w: %s has none (nixcell checkpoint %s makes one)", ErrNoCheckpoint, name, name)
	}
	return info, err
}

// RestoreCheckpoint brings back the processes of the stopped container's
// checkpoint, which it then removes. The generation the checkpoint ran
// must still be current. On failure the container stays stopped and the
// checkpoint stays.
func (m *Manager) RestoreCheckpoint(ctx context.Context, name string) (CheckpointInfo, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.RestoreCheckpoint)
	if err != nil {
		return CheckpointInfo{}, err
	}
	defer unlock()
	info, err := m.CheckpointOf(name)
	if err != nil {
		return info, err
	}
	gen, system, err := nix.Profile{Name: name}.Current()
	if err != nil {
		return info, err
	}
	if system != info.System {
		return info, fmt.Errorf("%w: its processes ran generation %d, and generation %d is current now; switch back to it (nixcell switch-generation %s %d) to restore them", ErrStaleCheckpoint, info.Generation, gen, name, info.Generation)
	}
	if _, err := runtime.CheckCRIU(); err != nil {
		return info, fmt.Errorf("not restored, it stays stopped and keeps its checkpoint: %w", err)
	}
	if _, err := m.startLocked(ctx, rec, startRequest{restore: &runtime.RestoreFrom{Dir: m.checkpointDir(name), TCP: info.TCP}}); err != nil {
		return info, err
	}
	if err := failpoint.Hit("restore-checkpoint/running"); err != nil {
		return info, err
	}
	return info, m.removeCheckpoint(name)
}
