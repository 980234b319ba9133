package runtime

/*
#include <stdlib.h>
#include "execfast_linux.h"
*/
import "C"

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/moby/sys/capability"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"golang.org/x/sys/unix"
)

// The exec fast path. libcontainer's exec re-executes the nixcell binary
// (after copying it, so a container cannot overwrite it), runs nsenter's C
// stage and the Go runtime inside the container's namespaces, and moves the
// process into its cgroups by PID, which on a cgroup v1 host waits for an
// RCU grace period: ~22 ms in all, against ~3 ms for nsenter(1).
//
// The fast path does the same work without another program: a nixcell
// thread joins the container's PID namespace for its children and clones a
// child straight into the container's cgroup2 directory (CLONE_INTO_CGROUP);
// the child, C code that makes only system calls, moves itself into the
// cgroup v1 hierarchies (writing 0 to "tasks", which takes no global lock),
// joins the other namespaces through a pidfd of the init, and applies what
// libcontainer's exec applies (setns_init_linux.go and nsexec.c in runc
// v1.5.2): a new session, UID/GID 0 and no supplementary groups, the
// session keyring _ses.NAME, no_new_privs, CPU affinity reset, the working
// directory (checked to be inside the root), the capability bounding,
// effective and permitted sets (inheritable and ambient empty), $HOME from
// /etc/passwd when the environment lacks it, the command looked up in $PATH
// as Go's exec.LookPath does, and last the container's seccomp filter,
// then execs. It closes every descriptor but stdio once in the namespaces,
// and is not dumpable until the exec.
//
// Deliberately not copied: libcontainer chowns a process's stdio to its
// user when they belong to another mapped user; the fast path leaves the
// caller's files alone.
//
// Everything about the container comes from libcontainer's state.json (10
// KB, read and decoded in ~0.1 ms), the settings libcontainer recorded at
// start, so exec applies the same ones whichever path it takes. A setting
// the fast path does not implement sends exec libcontainer's way.
// TestExecFastSameAsLibcontainer compares processes started both ways.
//
// What runFast found for an init, it leaves as an exec plan for the early
// path, which runs the same C code before the Go runtime starts
// (execplan_linux.go).

// ExecPathEnv names the environment variable that, set to "libcontainer",
// makes exec take libcontainer's path (for comparison, and as a way out
// should the fast path fail on some host); set to "fast", exec fails
// rather than take libcontainer's path (for tests). Set to anything, it
// keeps the early path (execplan_linux.go) out: Go decides.
const ExecPathEnv = "NIXCELL_EXEC"

// errUnsupported means the container's configuration has a setting the
// fast path does not implement.
var errUnsupported = errors.New("not supported by the exec fast path")

// execState is what exec reads of libcontainer's state.json.
type execState struct {
	InitPid   int               `json:"init_process_pid"`
	InitStart uint64            `json:"init_process_start"`
	Cgroups   map[string]string `json:"cgroup_paths"`
	Config    struct {
		Capabilities *struct {
			Bounding, Effective, Permitted, Inheritable, Ambient []string
		} `json:"capabilities"`
		Seccomp json.RawMessage `json:"seccomp"` // decoded only to compile it (seccompProgram)
		Cgroup  struct {
			Path string `json:"path"`
		} `json:"cgroups"`
		// Settings libcontainer's exec applies and the fast path does
		// not; nixcell sets none of them.
		Umask           json.RawMessage `json:"umask"`
		AppArmor        json.RawMessage `json:"apparmor_profile"`
		ProcessLabel    json.RawMessage `json:"process_label"`
		Rlimits         json.RawMessage `json:"rlimits"`
		OomScoreAdj     json.RawMessage `json:"oom_score_adj"`
		NoNewKeyring    json.RawMessage `json:"no_new_keyring"`
		IntelRdt        json.RawMessage `json:"intel_rdt"`
		MemoryPolicy    json.RawMessage `json:"memory_policy"`
		RootlessEUID    json.RawMessage `json:"rootless_euid"`
		RootlessCgroups json.RawMessage `json:"rootless_cgroups"`
		Scheduler       json.RawMessage `json:"scheduler"`
		Personality     json.RawMessage `json:"personality"`
		IOPriority      json.RawMessage `json:"io_priority"`
		ExecCPUAffinity json.RawMessage `json:"exec_cpu_affinity"`
		ParentDeath     json.RawMessage `json:"parent_death_signal"`
	} `json:"config"`
}

func (s *execState) supported() bool {
	c := &s.Config
	for _, v := range []json.RawMessage{c.Umask, c.AppArmor, c.ProcessLabel, c.Rlimits, c.OomScoreAdj,
		c.NoNewKeyring, c.IntelRdt, c.MemoryPolicy, c.RootlessEUID, c.RootlessCgroups, c.Scheduler,
		c.Personality, c.IOPriority, c.ExecCPUAffinity, c.ParentDeath} {
		switch string(v) {
		case "", "null", "false", "0", `""`:
		default:
			return false
		}
	}
	caps := c.Capabilities
	return len(c.Seccomp) > 0 && string(c.Seccomp) != "null" && caps != nil && len(caps.Inheritable) == 0 && len(caps.Ambient) == 0
}

// runFast runs e without a terminal through the fast path; errUnsupported
// means it started nothing and libcontainer's path should.
func (e Exec) runFast(stateRoot, name string) (int, error) {
	dir := filepath.Join(stateRoot, name)
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, lifecycle.ErrNotRunning
	}
	if err != nil {
		return 0, fmt.Errorf("loading runtime state: %w", err)
	}
	var st execState
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("loading runtime state: %w", err)
	}
	if !st.supported() {
		return 0, errUnsupported
	}
	// libcontainer's Status: an init not started yet (its exec fifo is
	// there) or frozen is not running.
	if exists(filepath.Join(dir, execFifo)) || frozen(st.Cgroups) {
		return 0, lifecycle.ErrNotRunning
	}
	pidfd, err := unix.PidfdOpen(st.InitPid, 0)
	if err != nil {
		return 0, lifecycle.ErrNotRunning
	}
	defer unix.Close(pidfd)
	// Checked after the pidfd is open: it then refers to this init, not
	// to a process that got its PID later.
	if !initAlive(st.InitPid, st.InitStart) {
		return 0, lifecycle.ErrNotRunning
	}
	prog, caps, err := execSettings(dir, st)
	if err != nil {
		return 0, err
	}
	env, path, hasHome, err := processEnv(e.env())
	if err != nil {
		return 0, fmt.Errorf("starting %q: %w", e.Args[0], err)
	}
	joinPid, nsflags, err := namespacesToJoin(st.InitPid)
	if err != nil {
		return 0, err
	}
	cg, err := openCgroups(st.Cgroups)
	if err != nil {
		return 0, err
	}
	defer cg.close()
	streams, err := newProcStdio(e.Stdio)
	if err != nil {
		return 0, err
	}
	defer streams.closeChildEnds()

	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer errR.Close()
	errFd, err := unix.FcntlInt(errW.Fd(), unix.F_DUPFD_CLOEXEC, 3) // never one of 0-2, which the child replaces
	errW.Close()
	if err != nil {
		return 0, err
	}

	a := new(cArena)
	defer a.free()
	x := (*C.struct_nc_exec)(a.alloc(C.sizeof_struct_nc_exec))
	x.pidfd = C.int(pidfd)
	x.join_pidns = C.int(b2i(joinPid))
	x.nsflags = C.int(nsflags)
	x.cgroupfd = C.int(cg.dir)
	x.tasksfds = (*C.int)(a.ints(cg.tasks))
	x.ntasks = C.int(len(cg.tasks))
	for i, fd := range streams.child {
		x.stdio[i] = C.int(fd)
	}
	x.errfd = C.int(errFd)
	x.argv = (**C.char)(a.strings(e.Args, 0))
	x.envp = (**C.char)(a.strings(env, 1))
	if !hasHome {
		x.homebuf = (*C.char)(a.alloc(5 + unix.PathMax + 1))
	}
	x.path = a.string(path)
	x.cwd = a.string(e.cwd())
	x.keyring = a.string("_ses." + name)
	x.bounding, x.effective, x.permitted = C.uint64_t(caps[0]), C.uint64_t(caps[1]), C.uint64_t(caps[2])
	x.filter = (*C.struct_sock_filter)(a.bytes(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0])))))
	x.filter_len = C.ushort(len(prog))

	proc, cgroup2, err := spawn(x, st, cg)
	unix.Close(errFd)
	goruntime.KeepAlive(streams)
	if err != nil {
		return 0, fmt.Errorf("starting %q: %w", e.Args[0], err)
	}
	defer unix.Close(proc.pidfd)
	streams.closeChildEnds()
	if err := childReport(errR, e.Args[0]); err != nil {
		_ = proc.wait()
		streams.wait()
		return 0, fmt.Errorf("starting %q: %w", e.Args[0], err)
	}
	defer killOnDone(proc, e.Done)()
	stop := forwardSignals(proc, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	defer stop()
	// The process runs: what was found for it is what the early path
	// needs for the next exec into this init.
	writePlan(dir, newExecPlan(st, name, caps, cgroup2, prog))
	code := proc.wait()
	streams.wait()
	return code, nil
}

// execSettings are the seccomp program and capability masks (bounding,
// effective, permitted) of an exec into the init of st, whose runtime
// state directory is dir.
func execSettings(dir string, st execState) ([]unix.SockFilter, [3]uint64, error) {
	prog, err := cachedSeccompProgram(dir, st.Config.Seccomp)
	if err != nil {
		return nil, [3]uint64{}, err
	}
	if len(prog) == 0 || len(prog) > 0xffff {
		return nil, [3]uint64{}, errUnsupported
	}
	c := st.Config.Capabilities
	caps, err := capMasks(c.Bounding, c.Effective, c.Permitted)
	return prog, caps, err
}

// fastProcess is a process the fast path started: a child of nixcell,
// signalled through its pidfd (never another process that got its PID).
type fastProcess struct{ pid, pidfd int }

func (p *fastProcess) Signal(sig os.Signal) error {
	return unix.PidfdSendSignal(p.pidfd, sig.(syscall.Signal), nil, 0)
}

// wait reaps the process and returns its exit status, 128+N when killed
// by signal N.
func (p *fastProcess) wait() int {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(p.pid, &ws, 0, nil)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return 255
		}
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// env is the process's environment before deduplication, as Run gives it
// to libcontainer.
func (e Exec) env() []string {
	env := []string{"PATH=" + DefaultPath, "HOME=/root", "USER=root", "LOGNAME=root", "container=nixcell"}
	if t := os.Getenv("TERM"); e.TTY && t != "" {
		env = append(env, "TERM="+t)
	}
	return append(env, e.Env...)
}

func (e Exec) cwd() string {
	if e.Cwd == "" {
		return "/"
	}
	return e.Cwd
}

// spawn clones the process on a thread of its own, which joins the
// container's PID namespace for its children and is thrown away.
// It also returns the cgroup2 directory it cloned into ("" for none).
func spawn(x *C.struct_nc_exec, st execState, cg *cgroupFiles) (*fastProcess, string, error) {
	type result struct {
		p       *fastProcess
		cgroup2 string
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread dies with this goroutine
		cgroup2 := st.Cgroups[""]
		pid := int(C.nc_exec_spawn(x))
		if pid == -int(unix.EBUSY) && cg.dir >= 0 {
			// On a cgroup2 host, an init that enabled controllers for
			// its children (systemd does) left its cgroup to them: join
			// the init's own, as runc does.
			if fd, dir, err := initCgroup2(st); err == nil {
				x.cgroupfd = C.int(fd)
				pid = int(C.nc_exec_spawn(x))
				unix.Close(fd)
				cgroup2 = dir
			}
		}
		if pid < 0 {
			ch <- result{err: fmt.Errorf("clone3: %w", syscall.Errno(-pid))}
			return
		}
		ch <- result{p: &fastProcess{pid: pid, pidfd: int(x.child_pidfd)}, cgroup2: cgroup2}
	}()
	r := <-ch
	return r.p, r.cgroup2, r.err
}

// steps names the child's steps (enum nc_step) for error messages.
var steps = [...]string{"", "clone", "resetting signal handlers", "making it non-dumpable", "setting up stdio",
	"joining the cgroups", "joining the namespaces", "closing descriptors", "setsid", "joining the session keyring",
	"setting no_new_privs", "chdir", "dropping bounding capabilities", "keeping capabilities", "setgroups",
	"setgid", "setuid", "checking the working directory", "capset", "clearing ambient capabilities",
	"looking up the command", "loading the seccomp filter", "setting the signal mask", "exec"}

// childReport waits until the child has exec'd (EOF) or reports the step
// that failed.
func childReport(r *os.File, file string) error {
	var rep C.struct_nc_report
	buf := make([]byte, unsafe.Sizeof(rep))
	n, err := io.ReadFull(r, buf)
	if n == 0 && (err == io.EOF || err == nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading its setup report: %w", err)
	}
	rep = *(*C.struct_nc_report)(unsafe.Pointer(&buf[0]))
	step, errno := int(rep.step), syscall.Errno(rep.err)
	name := "step " + strconv.Itoa(step)
	if step >= 0 && step < len(steps) {
		name = steps[step]
	}
	switch {
	case step == C.NC_STEP_LOOKUP && rep.err == -1:
		return fmt.Errorf("exec: %q: executable file not found in $PATH", file)
	case step == C.NC_STEP_LOOKUP || step == C.NC_STEP_EXEC:
		return fmt.Errorf("exec: %q: %w", file, errno)
	case step == C.NC_STEP_GETCWD && errno == unix.EXDEV:
		return errors.New("the working directory is outside the container's root")
	}
	return fmt.Errorf("%s: %w", name, errno)
}

// initAlive tells whether pid is still the init that started at start
// (clock ticks after boot, as libcontainer records it).
func initAlive(pid int, start uint64) bool {
	return C.nc_init_alive(C.int(pid), C.uint64_t(start)) != 0
}

// frozen tells whether the container's freezer cgroup holds it frozen.
func frozen(paths map[string]string) bool {
	kind, file := freezerOf(paths)
	if kind == C.NC_FREEZER_NONE {
		return false
	}
	cs := C.CString(file)
	defer C.free(unsafe.Pointer(cs))
	return C.nc_frozen(C.int(kind), cs) != 0
}

// freezerOf is the file that says whether the container is frozen, and
// its kind (enum nc_freezer).
func freezerOf(paths map[string]string) (int, string) {
	if dir, ok := paths["freezer"]; ok {
		return C.NC_FREEZER_V1, filepath.Join(dir, "freezer.state")
	}
	if dir, ok := paths[""]; ok {
		return C.NC_FREEZER_V2, filepath.Join(dir, "cgroup.freeze")
	}
	return C.NC_FREEZER_NONE, ""
}

// namespacesToJoin returns the init's namespaces that are not nixcell's
// own; joining one's own user namespace is an error.
func namespacesToJoin(pid int) (joinPid bool, flags int, err error) {
	var join, nsflags C.int
	switch r, errno := C.nc_namespaces(C.int(pid), &join, &nsflags); r {
	case 0:
		return join != 0, int(nsflags), nil
	case -2:
		return false, 0, lifecycle.ErrNotRunning
	default:
		return false, 0, fmt.Errorf("reading this process's namespaces: %w", errno)
	}
}

// capMasks returns the bounding, effective and permitted sets as bit
// masks. Capabilities unknown to the kernel are left out, as libcontainer
// leaves them out.
func capMasks(sets ...[]string) ([3]uint64, error) {
	var m [3]uint64
	list, err := capability.ListSupported()
	if err != nil {
		return m, err
	}
	bits := make(map[string]uint, len(list))
	for _, c := range list {
		bits["CAP_"+strings.ToUpper(c.String())] = uint(c)
	}
	for i, set := range sets {
		for _, name := range set {
			if b, ok := bits[name]; ok && b < 64 {
				m[i] |= 1 << b
			}
		}
	}
	return m, nil
}

// processEnv prepares the environment as runc's prepareEnv does: the last
// value of each variable wins, malformed entries are refused, an empty
// HOME counts as none. It also returns $PATH, for finding the command.
func processEnv(env []string) (out []string, path string, hasHome bool, err error) {
	seen := make(map[string]bool, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		kv := env[i]
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, "", false, errors.New("invalid environment variable: missing '='")
		}
		if k == "" {
			return nil, "", false, errors.New("invalid environment variable: name cannot be empty")
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if strings.IndexByte(kv, 0) >= 0 {
			return nil, "", false, fmt.Errorf("invalid environment variable %q: contains nul byte (\\x00)", k)
		}
		switch k {
		case "PATH":
			path = v
		case "HOME":
			if v == "" {
				continue
			}
			hasHome = true
		}
		out = append(out, kv)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, path, hasHome, nil
}

// cgroupFiles are the container's cgroups, opened by the host: the
// cgroup2 directory to clone into (-1 without one) and each v1
// hierarchy's tasks file.
type cgroupFiles struct {
	dir   int
	tasks []int
}

// openCgroups opens the cgroups libcontainer recorded for the container
// (the paths libcontainer's exec joins). cgroupfs has no symbolic links
// (/sys/fs/cgroup's links between co-mounted hierarchies are the host's).
func openCgroups(paths map[string]string) (*cgroupFiles, error) {
	cg := &cgroupFiles{dir: -1}
	for ctrl, p := range paths {
		var fd int
		var err error
		if ctrl == "" {
			fd, err = unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			cg.dir = fd
		} else {
			fd, err = unix.Open(filepath.Join(p, "tasks"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				cg.tasks = append(cg.tasks, fd)
			}
		}
		if err != nil {
			cg.close()
			return nil, fmt.Errorf("opening cgroup %s: %w", p, err)
		}
	}
	return cg, nil
}

func (cg *cgroupFiles) close() {
	if cg.dir >= 0 {
		unix.Close(cg.dir)
		cg.dir = -1
	}
	for _, fd := range cg.tasks {
		unix.Close(fd)
	}
	cg.tasks = nil
}

// initCgroup2 opens the cgroup2 directory the init is in now, if it is
// below the container's, and returns it with its path. /proc/PID/cgroup names it from the cgroup2
// root; the container's directory is known by its absolute path, whose
// mount point is found as what precedes the deepest ancestor of the
// init's cgroup it ends with (the systemd driver records no relative
// path in the configuration).
func initCgroup2(st execState) (int, string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(st.InitPid) + "/cgroup")
	if err != nil {
		return -1, "", err
	}
	defer f.Close()
	dir := st.Cgroups[""]
	s := bufio.NewScanner(f)
	for s.Scan() {
		p, found := strings.CutPrefix(s.Text(), "0::")
		if !found {
			continue
		}
		for r := path.Dir(p); r != "/" && r != "."; r = path.Dir(r) {
			if mnt, ok := strings.CutSuffix(dir, r); ok && !strings.HasSuffix(mnt, "/") {
				fd, err := unix.Open(mnt+p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				return fd, mnt + p, err
			}
		}
	}
	return -1, "", errors.New("the init has no cgroup2 directory below the container's")
}

// procStdio is a process's stdin, stdout and stderr: the caller's files
// as they are, /dev/null for none, pipes copied from and to other readers
// and writers (as os/exec does).
type procStdio struct {
	child  [3]int
	files  []*os.File // the child's ends and /dev/null, closed once it runs
	copies sync.WaitGroup
}

func newProcStdio(s Stdio) (*procStdio, error) {
	p := &procStdio{}
	devNull := func(flag int) (int, error) {
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err != nil {
			return -1, err
		}
		p.files = append(p.files, f)
		return int(f.Fd()), nil
	}
	// stdin
	switch in := s.Stdin.(type) {
	case nil:
		fd, err := devNull(os.O_RDONLY)
		if err != nil {
			return nil, err
		}
		p.child[0] = fd
	case *os.File:
		p.child[0] = int(in.Fd())
	default:
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, r)
		p.child[0] = int(r.Fd())
		go func() {
			_, _ = io.Copy(w, in)
			w.Close()
		}()
	}
	outFd := func(w io.Writer) (int, error) {
		switch out := w.(type) {
		case nil:
			return devNull(os.O_WRONLY)
		case *os.File:
			return int(out.Fd()), nil
		}
		r, pw, err := os.Pipe()
		if err != nil {
			return -1, err
		}
		p.files = append(p.files, pw)
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			_, _ = io.Copy(w, r)
			r.Close()
		}()
		return int(pw.Fd()), nil
	}
	var err error
	if p.child[1], err = outFd(s.Stdout); err != nil {
		p.closeChildEnds()
		return nil, err
	}
	if s.Stderr != nil && sameWriter(s.Stderr, s.Stdout) {
		p.child[2] = p.child[1]
	} else if p.child[2], err = outFd(s.Stderr); err != nil {
		p.closeChildEnds()
		return nil, err
	}
	return p, nil
}

// closeChildEnds closes the descriptors only the child needs.
func (p *procStdio) closeChildEnds() {
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
}

// wait waits until the output pipes have been drained.
func (p *procStdio) wait() { p.copies.Wait() }

// sameWriter is os/exec's test for one writer given as both stdout and
// stderr (a non-comparable type is never the same).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() { _ = recover() }()
	return a == b
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// cArena is C memory for the child's arguments, freed once it runs.
type cArena struct{ ptrs []unsafe.Pointer }

func (a *cArena) alloc(n int) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("out of memory")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *cArena) string(s string) *C.char {
	p := a.alloc(len(s) + 1)
	copy(unsafe.Slice((*byte)(p), len(s)), s)
	return (*C.char)(p)
}

func (a *cArena) bytes(b []byte) unsafe.Pointer {
	p := a.alloc(len(b))
	copy(unsafe.Slice((*byte)(p), len(b)), b)
	return p
}

// strings returns a NULL-terminated array of C strings with spare NULL
// slots.
func (a *cArena) strings(ss []string, spare int) unsafe.Pointer {
	arr := unsafe.Slice((**C.char)(a.alloc((len(ss)+1+spare)*int(unsafe.Sizeof((*C.char)(nil))))), len(ss)+1+spare)
	for i, s := range ss {
		arr[i] = a.string(s)
	}
	return unsafe.Pointer(&arr[0])
}

func (a *cArena) ints(v []int) unsafe.Pointer {
	if len(v) == 0 {
		return nil
	}
	arr := unsafe.Slice((*C.int)(a.alloc(len(v)*int(unsafe.Sizeof(C.int(0))))), len(v))
	for i, n := range v {
		arr[i] = C.int(n)
	}
	return unsafe.Pointer(&arr[0])
}

func (a *cArena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}
