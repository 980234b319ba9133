package runtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// DefaultPath is the PATH of the init and of exec'd processes: NixOS's
// system profile first, so commands resolve before and after activation.
const DefaultPath = "/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Status is what the runtime knows of a container right now.
type Status struct {
	// Running is true while the init lives. A container whose init died on
	// its own is not running, even though its runtime state is still there.
	Running bool `json:"running"`
	// Pid is the init's host PID, 0 when not running.
	Pid int `json:"pid,omitempty"`
	// StartedAt is when the init started, zero when not running.
	StartedAt time.Time `json:"startedAt,omitzero"`
}

// Inspect reports whether the container's init is alive. The init is
// identified by PID and start time, as libcontainer does, so a recycled PID
// is not mistaken for it. It reads libcontainer's state.json itself rather
// than through libcontainer.Load, which also builds the container's cgroup
// manager: ten times the cost, paid by every container of a list.
func Inspect(stateRoot, name string) (Status, error) {
	data, err := os.ReadFile(filepath.Join(stateRoot, name, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Status{}, nil // never started, or a start killed before it wrote it
	}
	if err != nil {
		return Status{}, fmt.Errorf("loading runtime state: %w", err)
	}
	st, err := readInit(data)
	if err != nil {
		return Status{}, fmt.Errorf("loading runtime state %s: %w", filepath.Join(stateRoot, name), err)
	}
	// An init that is gone left state Cleanup removes. One still in
	// libcontainer's init stage with its exec fifo there (libcontainer's
	// Created) is a start in progress, or the leftover of one killed
	// before it let its init run: the container's init does not run. Once
	// a start has read the fifo, libcontainer removes it and the init runs,
	// though it may not have reached its execve yet.
	if !initAlive(st.Pid, st.Start) || waitsOnExecFifo(st.Pid) && exists(filepath.Join(stateRoot, name, execFifo)) {
		return Status{}, nil
	}
	return Status{Running: true, Pid: st.Pid, StartedAt: bootTime().Add(ticksToDuration(st.Start))}, nil
}

// execFifo is libcontainer's exec fifo in its state directory: there from
// the init's creation until a start opens it.
const execFifo = "exec.fifo"

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// initOf is the init of libcontainer's state.json.
type initOf struct {
	Pid   int    `json:"init_process_pid"`
	Start uint64 `json:"init_process_start"`
}

// readInit reads the init's PID and start time from state.json, stopping
// once it has both: libcontainer writes them before the container's
// configuration, which is nearly all of the file.
func readInit(data []byte) (initOf, error) {
	var st initOf
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return st, fmt.Errorf("not a JSON object")
	}
	havePid, haveStart := false, false
	for d.More() && !(havePid && haveStart) {
		t, err := d.Token()
		if err != nil {
			return st, err
		}
		var v any = new(json.RawMessage)
		switch t {
		case "init_process_pid":
			v, havePid = &st.Pid, true
		case "init_process_start":
			v, haveStart = &st.Start, true
		}
		if err := d.Decode(v); err != nil {
			return st, err
		}
	}
	if !havePid || !haveStart {
		return st, fmt.Errorf("no init_process_pid and init_process_start")
	}
	return st, nil
}

// waitsOnExecFifo tells whether the container init pid is still
// libcontainer's own init stage, which waits on the exec fifo to execute
// the container's init; runc names that stage runc:[2:INIT].
func waitsOnExecFifo(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(comm)) == libcontainerInitName
}

// Start boots the container detached: it returns once the init runs, or,
// with ReadyTimeout set, once the container is ready (see Systemd).
// It leaves no process of its own behind, but for the instance's console
// agent (see console_linux.go), which the first start that needs it
// starts for all of them. On error nothing of the start
// remains, except after a readiness timeout: then the container keeps
// running and the error says so.
func (c *Container) Start() error {
	if !c.fileConsole() {
		c.ConsoleAgent.Prepare()
	}
	s, err := c.create(nil)
	if err != nil {
		return err
	}
	defer s.notify.Close()
	finishPlan := planExec(c.StateRoot, c.Name)
	if s.console != nil {
		err := c.keepConsole(s)
		s.closeConsole()
		if err != nil {
			finishPlan(false)
			s.abort(c)
			return err
		}
		c.Trace.Mark("console kept")
	}
	if err := s.lc.Exec(); err != nil {
		finishPlan(false)
		s.abort(c)
		return fmt.Errorf("starting init: %w", err)
	}
	c.Trace.Mark("init running")
	finishPlan(true)
	c.Trace.Mark("exec plan")
	if c.ReadyTimeout <= 0 {
		return nil
	}
	err = c.waitReady(s, c.ReadyTimeout)
	if errors.Is(err, errInitGone) {
		_ = Cleanup(c.Place())
		return fmt.Errorf("%w: its init exited before it was ready (its output is in %s)", ErrNotReady, c.ConsoleLog)
	}
	if err != nil {
		return &NotReadyError{Err: err}
	}
	return nil
}

// NotReadyError is a start whose container did not become ready in time
// but keeps running.
type NotReadyError struct{ Err error }

func (e *NotReadyError) Error() string { return e.Err.Error() + "; it keeps running" }
func (e *NotReadyError) Unwrap() error { return e.Err }

// errInitGone means the init exited while nixcell waited for it.
var errInitGone = errors.New("init exited")

// waitReady waits until the container is ready: READY=1 from an init that
// reports readiness, or at once for one that does not. A zero timeout
// waits as long as the init lives.
func (c *Container) waitReady(s *started, timeout time.Duration) error {
	if !c.Systemd {
		return nil
	}
	pid, err := s.proc.Pid()
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return errInitGone
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	err = s.notify.waitReady(pidfd, timeout)
	if err != nil && exited(pidfd, 0) {
		return errInitGone
	}
	return err
}

// Stdio is the standard streams of a foreground container or exec'd
// process; nil means /dev/null. Files are passed to the process as they
// are; other readers and writers through pipes.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Run boots the container in the foreground and returns how its init
// ended, when it has. Its console is stdio: what the container writes
// there goes to Stdout, and when Stdin is a terminal, it is the console's
// keyboard (EscapeKey pressed three times stops the container). Signals
// arriving on stop (typically SIGTERM or SIGINT forwarded from a service
// manager) shut it down as Stop does. started is called once the init
// runs, or when the start failed. The runtime state is removed before Run
// returns.
//
// Under a service manager that set $NOTIFY_SOCKET, Run passes readiness
// through: READY=1 once the container is ready (see Systemd), and
// STOPPING=1 when asked to stop.
func (c *Container) Run(stdio Stdio, stop <-chan os.Signal, timeout time.Duration, started func()) (_ LastExit, retErr error) {
	s, err := c.create(&stdio)
	if err != nil {
		started()
		return LastExit{}, err
	}
	defer func() {
		s.closeConsole()
		if err := Cleanup(c.Place()); err != nil && retErr == nil {
			retErr = err
		}
	}()
	err = s.lc.Exec()
	started()
	if err != nil {
		s.notify.Close()
		return LastExit{}, fmt.Errorf("starting init: %w", err)
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		go func() {
			defer s.notify.Close()
			if c.waitReady(s, 0) == nil {
				sdNotify("READY=1")
			}
		}()
	} else {
		s.notify.Close()
	}
	pid, err := s.proc.Pid()
	if err != nil {
		return LastExit{}, err
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		ps, _ := s.proc.Wait()
		done <- ps
	}()
	var ended func()
	if s.console != nil {
		ended = followConsole(s.console, stdio.Stdout)
		escape := interact(s.console, stdio.Stdin)
		defer escape.stop()
		stop = merge(stop, escape.pressed)
	}
	for {
		select {
		case ps := <-done:
			if ended != nil {
				ended()
			}
			return runExit(s.lc, ps), nil
		case <-stop:
			sdNotify("STOPPING=1")
			go func() { _, _ = shutdown(pid, timeout, func() { _ = s.lc.Signal(unix.SIGKILL) }) }()
		}
	}
}

// started is a container whose init has been created and waits to be
// started (Exec).
type started struct {
	lc     *libcontainer.Container
	proc   *libcontainer.Process
	notify *notifier
	// console is the master side of the init's terminal, and log the
	// console log it goes to when detached (see fileConsole).
	console *os.File
	log     consoleLog
}

// closeConsole closes what this process holds of the console.
func (s *started) closeConsole() {
	if s.console != nil {
		s.console.Close()
	}
	if s.log.log != nil {
		s.log.Close()
	}
}

// abort kills and removes what create made.
func (s *started) abort(c *Container) {
	s.closeConsole()
	s.notify.Close()
	_ = Cleanup(c.Place())
}

// create makes the libcontainer container and starts its init, which then
// waits for Exec. stdio nil means detached: output goes to the console log,
// or to c.Stdout and c.Stderr.
func (c *Container) create(stdio *Stdio) (_ *started, retErr error) {
	if err := c.checkHost(); err != nil {
		return nil, err
	}
	if err := c.prepareBinds(); err != nil {
		return nil, err
	}
	if !c.PlainRoot {
		if err := c.prepareRoot(); err != nil {
			return nil, err
		}
	}
	c.Trace.Mark("root prepared")
	if err := c.prepareHostDir(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = removeHostDir(c.HostDir)
		}
	}()
	notify, err := c.openNotifier()
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			notify.Close()
		}
	}()
	c.attach = nil
	if c.BeforeInit != nil && c.restore == nil {
		c.attach = newAttachment(c.BeforeInit, c.Trace)
	}
	cfg, hostMounts, err := c.config()
	if err != nil {
		return nil, err
	}
	c.Trace.Mark("configuration")
	log, err := c.openConsoleLog()
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil || stdio != nil || c.fileConsole() {
			log.Close() // only a detached console's goes to the agent
		}
	}()
	if err := os.MkdirAll(c.StateRoot, 0o700); err != nil {
		return nil, err
	}
	env := append([]string{"PATH=" + DefaultPath, "HOME=/root", "TERM=linux", "NOTIFY_SOCKET=" + NotifySocket}, c.hostEnv()...)
	args := []string{c.Init}
	if c.Systemd && c.fileConsole() {
		args = append(args, "systemd.getty_auto=0")
	}
	proc := &libcontainer.Process{
		Args: append(args, c.InitArgs...),
		Env:  append(env, c.Env...),
		Cwd:  "/",
		Init: true,
	}
	var consoleSocket *os.File
	if c.fileConsole() {
		proc.Stdout, proc.Stderr = c.Stdout, c.Stderr
	} else {
		// libcontainer makes the terminal inside and sends its master here.
		var child *os.File
		if consoleSocket, child, err = utils.NewSockPair("console"); err != nil {
			return nil, err
		}
		defer consoleSocket.Close()
		defer child.Close()
		proc.ConsoleSocket = child
		if stdio != nil {
			proc.ConsoleWidth, proc.ConsoleHeight = terminalSize(stdio.Stdout)
		}
	}
	var lc *libcontainer.Container
	// Everything the container sees of the host is mounted in a private
	// mount namespace, which the container's is copied from; it is gone
	// once the container's root is set up, and nothing is ever mounted in
	// the host's namespace.
	err = inPrivateMounts(func() error {
		var userns *os.File
		if !c.Privileged() {
			var err error
			if userns, err = c.idmapUserns(); err != nil {
				return err
			}
			defer userns.Close()
		}
		if err := c.stageHostMounts(hostMounts, userns); err != nil {
			return err
		}
		if err := c.stageDev(); err != nil {
			return err
		}
		if err := c.mountPrivate(userns); err != nil {
			return err
		}
		c.Trace.Mark("host mounts")
		lc, err = libcontainer.Create(c.StateRoot, c.Name, cfg)
		if errors.Is(err, libcontainer.ErrExist) {
			// Left by an init that died on its own; the caller checked that
			// the container does not run.
			p := c.Place()
			if err := cleanupState(&p); err != nil {
				return err
			}
			lc, err = libcontainer.Create(c.StateRoot, c.Name, cfg)
		}
		if err != nil {
			return fmt.Errorf("creating runtime state: %w", err)
		}
		if err := c.startInit(lc, proc); err != nil {
			_ = lc.Destroy()
			if c.attach != nil {
				c.attach.drain()
			}
			return fmt.Errorf("starting container: %w", err)
		}
		c.Trace.Mark("namespaces, cgroup, mounts")
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := &started{lc: lc, proc: proc, notify: notify}
	if consoleSocket != nil {
		proc.ConsoleSocket.Close()
		if s.console, err = utils.RecvFile(consoleSocket); err != nil {
			s.abort(c)
			return nil, fmt.Errorf("receiving the console: %w", err)
		}
		if stdio == nil {
			s.log = log
		}
	}
	// An error from here on still waits for the network's setup, which
	// may run (see attachment).
	defer func() {
		if retErr != nil && c.attach != nil {
			c.attach.drain()
		}
	}()
	if err := c.delegateCgroup(lc); err != nil {
		s.abort(c)
		return nil, err
	}
	c.Trace.Mark("cgroup delegated")
	pid, err := proc.Pid()
	if err == nil && c.restore == nil { // CRIU restored the guest's view
		err = c.setupGuestView(pid)
	}
	if err != nil {
		s.abort(c)
		return nil, err
	}
	c.Trace.Mark("guest view")
	if c.attach != nil { // nil for a restore, whose hook ran BeforeInit
		if err := c.attach.wait(pid); err != nil {
			s.abort(c)
			return nil, err
		}
		c.Trace.Mark("network interfaces waited")
	}
	return s, nil
}

// prepareBinds checks that every bind mount's host path exists, creating
// those that may be created. Host paths are resolved without following
// symbolic links: one may lie inside another, read-write bind mount, where
// the container could have planted a link.
func (c *Container) prepareBinds() error {
	for _, b := range c.Binds {
		f, err := hostfs.Open(b.Source, unix.O_PATH)
		if err == nil {
			f.Close()
			continue
		}
		var link *hostfs.SymlinkError
		if errors.As(err, &link) {
			hint := ""
			if resolved, rerr := filepath.EvalSymlinks(b.Source); rerr == nil {
				hint = fmt.Sprintf(" (if the link is yours, give the path it leads to: %s)", resolved)
			}
			return fmt.Errorf("bind mount %s: %w; nixcell follows no link in a host path, since a container that can write one of its directories could have planted it: give a path without links%s", b.Destination, err, hint)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("bind mount %s: %w", b.Destination, err)
		}
		if !b.Create {
			return &MissingHostPathError{Destination: b.Destination, HostPath: b.Source}
		}
		owner := 0
		if !b.ReadOnly && !b.HostIDs {
			owner = int(c.IDs.Start) // the container's root, who writes there
		}
		if err := hostfs.MkdirAll(b.Source, 0o755, owner, owner); err != nil {
			return fmt.Errorf("bind mount %s: creating host path: %w", b.Destination, err)
		}
	}
	return nil
}

// RebootStatus is run's exit status when the container rebooted itself,
// as systemd-nspawn's: a service manager can start it again on it
// (RestartForceExitStatus=133).
const RebootStatus = 133

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 255
	}
	// os.ProcessState carries a syscall.WaitStatus; unix.WaitStatus is a
	// different type and never matches.
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// bootTime and ticksToDuration turn /proc start times (clock ticks since
// boot) into wall-clock times, which the run table and Nomad's task state
// record with a process's PID so that a recycled PID does not pass for it.
//
// The kernel's boot time (btime in /proc/stat) is the clock's time now
// less the time since boot, so it moves whenever the clock is set (an NTP
// step, date -s, a resumed VM): a process's start time read after that
// no longer matched the one recorded before, and every running container
// looked gone (a start then dropped their run records and their rules,
// doctor offered to remove their interfaces). So the boot time is read
// once per boot, by the first nixcell process that needs it, and kept in
// bootTimeFile (on /run, a tmpfs: it goes with the boot) with the boot's
// ID; every later process takes it from there, so all of them turn the
// same ticks into the same time. Start times shown are then off by the
// clock's later steps; the comparisons stay right.
func bootTime() time.Time { return bootTimeOnce() }

var bootTimeOnce = sync.OnceValue(func() time.Time { return keptBootTime(bootTimeFile) })

// bootTimeFile keeps this boot's ID and boot time: "BOOT-ID SECONDS".
var bootTimeFile = "/run/nixcell-boot-time"

// keptBootTime is the boot time kept in file for this boot, or the
// kernel's, which it keeps there (when it can: without it every process
// reads the kernel's).
func keptBootTime(file string) time.Time {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	boot := strings.TrimSpace(string(id))
	if data, err := os.ReadFile(file); err == nil && boot != "" {
		if f := strings.Fields(string(data)); len(f) == 2 && f[0] == boot {
			if sec, err := strconv.ParseInt(f[1], 10, 64); err == nil && sec > 0 {
				return time.Unix(sec, 0)
			}
		}
	}
	t := kernelBootTime()
	if t.IsZero() || boot == "" {
		return t
	}
	_ = atomicfile.WriteFile(file, fmt.Appendf(nil, "%s %d\n", boot, t.Unix()), 0o644)
	return t
}

// kernelBootTime is btime of /proc/stat.
func kernelBootTime() time.Time {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(sec, 0)
			}
		}
	}
	return time.Time{}
}

func ticksToDuration(ticks uint64) time.Duration {
	const userHZ = 100 // sysconf(_SC_CLK_TCK) on every Linux architecture Go supports
	return time.Duration(ticks) * time.Second / userHZ
}

// StartTime is when the process pid started, from /proc (zero when it does
// not exist): with the pid, it identifies a process for Alive.
func StartTime(pid int) time.Time {
	ticks, ok := startTicks(pid)
	if !ok {
		return time.Time{}
	}
	return bootTime().Add(ticksToDuration(ticks))
}

// Alive tells whether the process pid that started at startedAt (as Status
// reports it) still runs: a cheap check from /proc, with no runtime state
// loaded, that a recycled PID does not fool.
func Alive(pid int, startedAt time.Time) bool {
	ticks, ok := startTicks(pid)
	return ok && bootTime().Add(ticksToDuration(ticks)).Equal(startedAt)
}

// Exists tells whether a process pid runs, not counting one that has
// exited and waits to be reaped (an init whose parent, the host's init,
// has not reaped it yet): its pidfd is readable once it exited. Cheaper
// than Alive by the read of /proc/PID/stat (≈ 20 µs, more on a busy host),
// but a PID the kernel has given to another process since fools it.
func Exists(pid int) bool {
	if pid <= 0 {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		// Only ESRCH says it does not run; with any other error (out of
		// descriptors) it is kept, as a prune must not drop a live record.
		return err != unix.ESRCH
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 0
	}
}

// startTicks reads when a live (not zombie) process started, in clock
// ticks since boot, from /proc/PID/stat.
// It is read with one open, read and close into a buffer of its own (no
// stat, no growing): a start checks every running container's init.
func startTicks(pid int) (uint64, bool) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	var buf [1024]byte // the line is a few hundred bytes; its end is not needed
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return 0, false
	}
	// The command name may hold spaces and parentheses: fields are counted
	// after its closing parenthesis.
	s := string(buf[:n])
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(s[i+1:])
	const startTimeField = 22 - 3 // field 22 of stat(5); pid and comm come before these
	if len(fields) <= startTimeField || fields[0] == "Z" {
		return 0, false
	}
	ticks, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	return ticks, err == nil
}
