package runtime

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/atomicfile"
)

// How a container's last init ended is kept beside its console log (see
// consoleDirLabel), from its end until the next start:
//
//	init-exit.PID   its wait status, written by the console agent when the
//	                kernel tells it (Linux 6.15 and later)
//	last-exit.json  what the runtime knew when it removed the init's cgroup:
//	                the OOM kills the cgroup counted, whether nixcell stopped
//	                it, and its wait status when nixcell was its parent (run)
//
// While the runtime state of an init that died on its own is still there
// (until the next start, stop or destroy), its cgroup is too, and is read
// directly.

// LastExit is how a container's last init ended.
type LastExit struct {
	Exit
	// Known is false when nothing told how the init ended: only the OOM
	// kills of its cgroup are known (a detached container's init, before
	// Linux 6.15).
	Known bool
	// OOMKilled: the kernel's OOM killer ended the init (it was killed by
	// SIGKILL, or ended in an unknown way, while its cgroup counted OOM
	// kills, and nixcell did not stop it).
	OOMKilled bool
}

// lastExitFile is the runtime's record of the last init's end, beside the
// console log.
const lastExitFile = "last-exit.json"

type exitRecord struct {
	// Pid was the init's.
	Pid int `json:"pid"`
	// Status is the init's wait status, when nixcell waited for it.
	Status *uint32 `json:"status,omitempty"`
	// OOMKills is what its memory cgroup counted.
	OOMKills uint64 `json:"oomKills"`
	// Stopped: nixcell stopped or killed it.
	Stopped bool `json:"stopped,omitempty"`
}

// consoleDirLabel records in libcontainer's state the directory of the
// console log, where Cleanup records how the init ended.
const consoleDirLabel = "nixcell.consoledir"

// exit is how the init ended, from the record and, without a status of
// its own, the agent's in dir.
func (r exitRecord) exit(dir string) LastExit {
	var e LastExit
	status := r.Status
	if status == nil {
		if data, err := os.ReadFile(filepath.Join(dir, initExitFile(r.Pid))); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 32); err == nil {
				ws := uint32(n)
				status = &ws
			}
		}
	}
	if status != nil {
		e.Exit, e.Known = exitOf(unix.WaitStatus(*status)), true
		e.OOMKilled = !r.Stopped && r.OOMKills > 0 && e.Signal == unix.SIGKILL
		return e
	}
	e.OOMKilled = !r.Stopped && r.OOMKills > 0
	return e
}

// LastExitOf reports how the container's last init ended; ok is false
// while it runs, and when it has not run since its last start (nothing
// is known then). consoleLog is its console log.
func LastExitOf(stateRoot, name, consoleLog string) (e LastExit, ok bool) {
	dir := filepath.Dir(consoleLog)
	lc, err := libcontainer.Load(stateRoot, name)
	if err == nil {
		if st, err := lc.Status(); err != nil || st != libcontainer.Stopped {
			return e, false
		}
		// Died on its own; its cgroup is still there.
		s, err := lc.State()
		if err != nil {
			return e, false
		}
		return exitRecord{Pid: s.InitProcessPid, OOMKills: oomKills(s.CgroupPaths)}.exit(dir), true
	}
	var r exitRecord
	if err := atomicfile.ReadJSON(filepath.Join(dir, lastExitFile), &r); err != nil {
		return e, false
	}
	return r.exit(dir), true
}

// recordExit keeps what is known of how lc's init ended before its cgroup
// goes; unless replace is set, a record made since the start stays (stop
// and kill make theirs before their cleanup). Preconditions: the init has
// ended.
func recordExit(lc *libcontainer.Container, r exitRecord, replace bool) {
	dir := labelValue(lc.Config().Labels, consoleDirLabel)
	if dir == "" {
		return
	}
	path := filepath.Join(dir, lastExitFile)
	if _, err := os.Lstat(path); err == nil && !replace {
		return
	}
	if s, err := lc.State(); err == nil {
		r.Pid, r.OOMKills = s.InitProcessPid, oomKills(s.CgroupPaths)
	}
	// A record of the past: losing it (a full disk) loses nothing else.
	_ = atomicfile.WriteJSON(path, r, 0o600)
}

// runExit records how an init that Run waited for ended, and returns it.
func runExit(lc *libcontainer.Container, ps *os.ProcessState) LastExit {
	var r exitRecord
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			status := uint32(ws)
			r.Status = &status
		}
	}
	recordExit(lc, r, true)
	if r.Status == nil {
		return LastExit{Exit: Exit{Code: 255}}
	}
	r.OOMKills = cgroupOOMKills(lc)
	return r.exit("")
}

// cgroupOOMKills is the OOM kill count of lc's cgroup; 0 when it cannot be
// read.
func cgroupOOMKills(lc *libcontainer.Container) uint64 {
	st, err := lc.State()
	if err != nil {
		return 0
	}
	return oomKills(st.CgroupPaths)
}
