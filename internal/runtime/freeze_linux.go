package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/nixcell/nixcell/internal/lifecycle"
)

// Frozen is a running container whose processes the cgroup freezer
// stopped, so that its files hold still while the host copies them.
//
// A guard process keeps watch: if the command that froze the container
// dies before it thaws it (killed, or the machine's OOM killer), the guard
// thaws it, so a container is never left frozen by a command that is gone.
// The guard is a shell reading a pipe only this process holds: "thawed"
// means the work is done; end of file without it means this process died.
type Frozen struct {
	lc    *libcontainer.Container
	name  string
	guard *exec.Cmd
	pipe  *os.File
}

// guardScript thaws the freezer files it is given unless told on its
// standard input that the container was thawed. It ignores the signals a
// terminal sends, and runs in a session of its own, so an interrupt of the
// command does not end it.
const guardScript = `trap '' INT TERM HUP QUIT
IFS= read -r done
[ "$done" = thawed ] && exit 0
for f; do
  case $f in
  */freezer.state) echo THAWED > "$f" ;;
  */cgroup.freeze) echo 0 > "$f" ;;
  esac
done`

// Freeze freezes the running container name. The caller holds its lock
// and must call Thaw.
func Freeze(stateRoot, name string) (*Frozen, error) {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return nil, lifecycle.ErrNotRunning
	}
	if err != nil {
		return nil, fmt.Errorf("loading runtime state: %w", err)
	}
	st, err := lc.State()
	if err != nil {
		return nil, err
	}
	var files []string
	if p := st.CgroupPaths["freezer"]; p != "" {
		files = append(files, filepath.Join(p, "freezer.state"))
	}
	if p := st.CgroupPaths[""]; p != "" {
		if _, err := os.Stat(filepath.Join(p, "cgroup.freeze")); err == nil {
			files = append(files, filepath.Join(p, "cgroup.freeze"))
		}
	}
	if len(files) == 0 {
		return nil, errors.New("the host has no cgroup freezer (neither the v1 freezer controller nor cgroup v2's cgroup.freeze) to hold the container still while it is copied; stop it first")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	guard := exec.Command("/bin/sh", append([]string{"-c", guardScript, "nixcell-thaw-guard"}, files...)...)
	guard.Stdin = r
	guard.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = guard.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the guard that thaws the container if nixcell dies: %w", err)
	}
	f := &Frozen{lc: lc, name: name, guard: guard, pipe: w}
	if err := lc.Pause(); err != nil {
		f.release()
		return nil, fmt.Errorf("freezing %s: %w", name, err)
	}
	return f, nil
}

// Thaw lets the container's processes run again. It is idempotent.
func (f *Frozen) Thaw() error {
	if f.guard == nil {
		return nil
	}
	err := f.lc.Resume()
	if errors.Is(err, libcontainer.ErrNotPaused) {
		err = nil
	}
	if err != nil {
		// The guard thaws it when it learns nothing else.
		f.pipe.Close()
		_ = f.guard.Wait()
		f.guard = nil
		return fmt.Errorf("thawing %s: %w", f.name, err)
	}
	f.release()
	return nil
}

// release tells the guard its watch is over.
func (f *Frozen) release() {
	_, _ = f.pipe.WriteString("thawed\n")
	f.pipe.Close()
	_ = f.guard.Wait()
	f.guard = nil
}

// ThawLeftover thaws a container that is frozen although nobody holds it
// frozen: a command that froze it died before its guard could thaw it.
// Only a command holding the container's lock freezes it, so the caller,
// holding that lock, knows no one else does. It reports whether it thawed
// anything.
func ThawLeftover(stateRoot, name string) (bool, error) {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, nil // Inspect and Cleanup deal with unreadable state
	}
	st, err := lc.Status()
	if err != nil || st != libcontainer.Paused {
		return false, nil
	}
	if err := lc.Resume(); err != nil {
		return false, fmt.Errorf("thawing %s, left frozen by an interrupted command: %w", name, err)
	}
	return true, nil
}
