package runtime

/*
#include <stdlib.h>
#include <string.h>
#include "execfast_linux.h"
*/
import "C"

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The exec early path. Half of a fast-path exec was the start of the Go
// program itself (runtime and package initialisation of a 12 MB binary,
// ~6 ms). So the fast path leaves what it found for a running init in an
// exec plan, a small binary file in the init's runtime state directory
// (root's, on a tmpfs, removed with that directory when the container
// stops), and the next `nixcell [--state-dir DIR] exec NAME [--] CMD...`
// runs from a C constructor before the Go runtime starts
// (execearly_linux.c), as the console agent does: it finds the instance's
// run directory (the default one, or the one state.Store.Init names in
// the state directory's run-dir), checks the container's record says its
// creation finished (cell's createdAllows), reads the plan, and checks what
// runFast checks (the init is the plan's, by pidfd and start time; it is
// neither unstarted nor frozen) before it starts the command with the
// fast path's own C code (nc_exec_spawn) and waits for it, forwarding
// signals as forwardSignals does. Any other command line (a flag, -t),
// NIXCELL_EXEC set to anything, a missing, unreadable or stale plan, or a
// failure before the command runs, returns to Go, which does the exec as
// it did before (and writes the plan again).

// execPlan is what the early path needs to exec into one init: the
// struct nc_plan of execfast_linux.h.
type execPlan struct {
	InitPid     int
	InitStart   uint64
	Caps        [3]uint64 // bounding, effective, permitted
	Cgroup2     string    // the cgroup2 directory to clone into, "" for none
	FreezerKind int       // C.enum_nc_freezer
	Freezer     string    // the file that says whether the container is frozen
	Tasks       []string  // cgroup v1 tasks files
	Keyring     string
	Env         []string // processEnv's result for the default environment
	HasHome     bool
	Path        string
	Cwd         string
	Filter      []unix.SockFilter
}

// newExecPlan is the plan for an exec without flags into the init of st.
func newExecPlan(st execState, name string, caps [3]uint64, cgroup2 string, prog []unix.SockFilter) *execPlan {
	var e Exec
	env, path, hasHome, _ := processEnv(e.env()) // the defaults are valid
	p := &execPlan{InitPid: st.InitPid, InitStart: st.InitStart, Caps: caps, Cgroup2: cgroup2,
		Keyring: "_ses." + name, Env: env, HasHome: hasHome, Path: path, Cwd: e.cwd(), Filter: prog}
	for ctrl, dir := range st.Cgroups {
		if ctrl != "" {
			p.Tasks = append(p.Tasks, filepath.Join(dir, "tasks"))
		}
	}
	sort.Strings(p.Tasks) // the same plan for the same init
	p.FreezerKind, p.Freezer = freezerOf(st.Cgroups)
	return p
}

// planExec computes, in parallel with the rest of a start, the exec plan
// of the init the start has created (it keeps its PID when it runs the
// container's init), so that the first exec takes the early path too (one
// exec after each start is a common pattern: health checks, scripts).
// finish waits for it and, with write, writes it: once the init runs; a
// start that fails calls it without (it must not remove the init's runtime
// state while the plan is being made there). The plan names the
// container's own cgroup2 directory; for an init that gives it to its
// children (systemd), the early path's clone fails, Go takes over and
// writes the plan with the init's own cgroup. Failures only cost the
// first exec its early path.
func planExec(stateRoot, name string) (finish func(write bool)) {
	dir := filepath.Join(stateRoot, name)
	made := make(chan *execPlan, 1)
	go func() { made <- execPlanIn(dir, name) }()
	return func(write bool) {
		if p := <-made; p != nil && write {
			writePlan(dir, p)
		}
	}
}

// execPlanIn is the exec plan of the init whose runtime state is dir, nil
// when it has none.
func execPlanIn(dir, name string) *execPlan {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil
	}
	var st execState
	if json.Unmarshal(data, &st) != nil || !st.supported() {
		return nil
	}
	prog, caps, err := execSettings(dir, st)
	if err != nil {
		return nil
	}
	return newExecPlan(st, name, caps, st.Cgroups[""], prog)
}

// encode lays the plan out as execfast_linux.h describes.
func (p *execPlan) encode() []byte {
	b := make([]byte, C.sizeof_struct_nc_plan_header, 4096)
	h := (*C.struct_nc_plan_header)(unsafe.Pointer(&b[0]))
	h.magic, h.version = C.NC_PLAN_MAGIC, C.NC_PLAN_VERSION
	h.init_pid, h.init_start = C.int32_t(p.InitPid), C.uint64_t(p.InitStart)
	h.bounding, h.effective, h.permitted = C.uint64_t(p.Caps[0]), C.uint64_t(p.Caps[1]), C.uint64_t(p.Caps[2])
	h.has_home = C.uint32_t(b2i(p.HasHome))
	h.freezer_kind = C.uint32_t(p.FreezerKind)
	h.ntasks, h.nenv, h.filter_len = C.uint32_t(len(p.Tasks)), C.uint32_t(len(p.Env)), C.uint32_t(len(p.Filter))
	str := func(s string) {
		b = binary.NativeEndian.AppendUint32(b, uint32(len(s)+1))
		b = append(append(b, s...), 0)
	}
	str(p.Cgroup2)
	str(p.Freezer)
	for _, t := range p.Tasks {
		str(t)
	}
	str(p.Keyring)
	for _, e := range p.Env {
		str(e)
	}
	str(p.Path)
	str(p.Cwd)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	if len(p.Filter) > 0 {
		b = append(b, unsafe.Slice((*byte)(unsafe.Pointer(&p.Filter[0])), len(p.Filter)*int(unsafe.Sizeof(p.Filter[0])))...)
	}
	binary.NativeEndian.PutUint32(b[8:], uint32(len(b))) // h.length; b may have moved
	return b
}

var errBadPlan = errors.New("not a valid exec plan")

// decodePlan reads a plan with the early path's own reader.
func decodePlan(b []byte) (*execPlan, error) {
	if len(b) == 0 || len(b) > C.NC_PLAN_MAX {
		return nil, errBadPlan
	}
	buf := C.aligned_alloc(8, C.size_t((len(b)+7)&^7))
	if buf == nil {
		panic("out of memory")
	}
	defer C.free(buf)
	copy(unsafe.Slice((*byte)(buf), len(b)), b)
	c := (*C.struct_nc_plan)(C.calloc(1, C.sizeof_struct_nc_plan))
	defer C.free(unsafe.Pointer(c))
	if C.nc_plan_parse(buf, C.size_t(len(b)), c) != 0 {
		return nil, errBadPlan
	}
	p := &execPlan{InitPid: int(c.init_pid), InitStart: uint64(c.init_start),
		Caps:    [3]uint64{uint64(c.bounding), uint64(c.effective), uint64(c.permitted)},
		Cgroup2: C.GoString(c.cgroup2), FreezerKind: int(c.freezer_kind), Freezer: C.GoString(c.freezer),
		Keyring: C.GoString(c.keyring), HasHome: c.has_home != 0, Path: C.GoString(c.path), Cwd: C.GoString(c.cwd)}
	for i := range int(c.ntasks) {
		p.Tasks = append(p.Tasks, C.GoString(c.tasks[i]))
	}
	for i := range int(c.nenv) {
		p.Env = append(p.Env, C.GoString(c.env[i]))
	}
	p.Filter = make([]unix.SockFilter, int(c.filter_len))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&p.Filter[0])), len(p.Filter)*int(unsafe.Sizeof(p.Filter[0]))),
		unsafe.Slice((*byte)(unsafe.Pointer(c.filter)), int(c.filter_len)*int(unsafe.Sizeof(p.Filter[0]))))
	return p, nil
}

// writePlan keeps p as the plan in the container's runtime state
// directory dir, unless it is there already. A plan the early path would
// not read back as p is not written: that exec keeps going through Go.
// Failures only cost the next exec its early path.
func writePlan(dir string, p *execPlan) {
	data := p.encode()
	path := filepath.Join(dir, C.NC_PLAN_FILE)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return
	}
	if back, err := decodePlan(data); err != nil || !p.equal(back) {
		return
	}
	// A temporary file of its own: two execs may write at once.
	f, err := os.CreateTemp(dir, "."+C.NC_PLAN_FILE+"-*") // 0600
	if err != nil {
		return // the directory went with a stop meanwhile
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
}

func (p *execPlan) equal(q *execPlan) bool {
	return bytes.Equal(p.encode(), q.encode())
}
