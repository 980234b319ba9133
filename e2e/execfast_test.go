package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestExecFastSameAsLibcontainer starts a process in a running container
// through exec's fast path (NIXCELL_EXEC=fast: no fallback), another
// through libcontainer's setns path (NIXCELL_EXEC=libcontainer), and a
// third through the early path (NIXCELL_EXEC unset: the plan the fast path
// left, before the Go runtime starts), and compares what the kernel says
// of them: credentials, capability sets, no_new_privs, the seccomp
// filter's program, ID maps, cgroups, namespaces, root and working
// directory, environment, limits, session, signal dispositions. Any drift
// of either path from libcontainer's shows here.
func TestExecFastSameAsLibcontainer(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{{"unprivileged", nil}, {"privileged", []string{"--privileged"}}} {
		t.Run(c.name, func(t *testing.T) {
			in := newInstance(t)
			name := testutil.Name("xdrift")
			in.must(append([]string{"create", name, "--system", prebuilt(t, `{ }`)}, c.args...)...)
			in.must("start", name)
			fast, fastExec := in.sleeper(name, "fast")
			slow, _ := in.sleeper(name, "libcontainer")
			early, earlyExec := in.sleeper(name, "")
			// The Go runtime runs several threads; the early path, one.
			if n := threads(t, earlyExec); n != 1 {
				t.Errorf("the early path's nixcell has %d threads: the Go runtime started", n)
			}
			if n := threads(t, fastExec); n < 2 {
				t.Errorf("the fast path's nixcell has %d threads: the Go runtime did not start", n)
			}
			paths := []struct {
				name string
				pid  int
			}{{"fast path", fast}, {"early path", early}}
			for _, p := range paths {
				for _, f := range []string{"status", "uid_map", "gid_map", "setgroups", "cgroup", "environ", "limits", "oom_score_adj", "stat"} {
					a, b := procFile(t, p.pid, f), procFile(t, slow, f)
					if a != b {
						t.Errorf("/proc/PID/%s differs:\n%s:\n%s\nlibcontainer:\n%s", f, p.name, a, b)
					}
				}
				for _, l := range []string{"root", "cwd", "ns/user", "ns/mnt", "ns/pid", "ns/pid_for_children", "ns/uts", "ns/ipc", "ns/net", "ns/cgroup", "ns/time", "ns/time_for_children"} {
					a, errA := os.Readlink(fmt.Sprintf("/proc/%d/%s", p.pid, l))
					b, errB := os.Readlink(fmt.Sprintf("/proc/%d/%s", slow, l))
					if errA != nil || errB != nil || a != b {
						t.Errorf("/proc/PID/%s: %s %q (%v), libcontainer %q (%v)", l, p.name, a, errA, b, errB)
					}
				}
			}
			// Last: reading a seccomp program stops the process a while.
			for _, p := range paths {
				a, b := seccompProgram(t, p.pid), seccompProgram(t, slow)
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Errorf("seccomp programs differ: %s %d bytes, libcontainer %d bytes", p.name, len(a), len(b))
				}
				if got := procFile(t, p.pid, "status"); !strings.Contains(got, "NoNewPrivs:\t1") || !strings.Contains(got, "Seccomp:\t2") {
					t.Errorf("%s process without no_new_privs or seccomp:\n%s", p.name, got)
				}
			}
		})
	}
}

// threads is the number of threads of pid.
func threads(t *testing.T, pid int) int {
	t.Helper()
	for _, line := range strings.Split(procFileRaw(t, pid, "status"), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no Threads line", pid)
	return 0
}

// sleeper starts `sleep 1000` in the container through the given exec
// path ("" for NIXCELL_EXEC unset: the early path, or the fast path that
// leaves its plan) and returns its host PID and nixcell's; the test's end
// kills them.
func (in *instance) sleeper(name, path string) (int, int) {
	in.t.Helper()
	c := in.cmd("exec", name, "--", "sleep", "1000")
	c.Env = append(c.Env, "NIXCELL_EXEC="+path)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		in.t.Fatal(err)
	}
	sleep := 0
	in.t.Cleanup(func() {
		// Killing exec leaves what it started running (on both paths),
		// holding exec's stderr: it is killed too.
		if sleep != 0 {
			_ = syscall.Kill(sleep, syscall.SIGKILL)
		}
		_ = c.Process.Kill()
		_ = c.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, child := range children(c.Process.Pid) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child)); string(comm) == "sleep\n" {
				sleep = child
				// Just exec'd, it may still be paging in (D, disk
				// sleep); the states compared are those of sleep
				// sleeping (S), which both paths must reach.
				for time.Now().Before(deadline) && procState(child) != "S" {
					time.Sleep(5 * time.Millisecond)
				}
				return child, c.Process.Pid
			}
		}
		if c.ProcessState != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	in.t.Fatalf("exec (%s) did not start sleep: %s", path, stderr.String())
	return 0, 0
}

// procState is the one-letter state of pid (/proc/PID/stat), "" if gone.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// children lists the child processes of pid (of all its threads).
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// procFile reads /proc/PID/name with what differs between any two
// processes taken out: PIDs, times, memory and scheduling figures. What
// stays is what their start decided.
func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	s := procFileRaw(t, pid, name)
	switch name {
	case "environ":
		return strings.ReplaceAll(s, "\x00", "\n")
	case "stat":
		// The session and process group: the process leads its own.
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		self := strconv.Itoa(pid)
		return fmt.Sprintf("state=%s pgrp-is-self=%v session-is-self=%v tty=%s", f[0], f[2] == self, f[3] == self, f[4])
	case "status":
		var keep []string
		for _, line := range strings.Split(s, "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "Umask", "State", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
				"NoNewPrivs", "Seccomp", "Seccomp_filters", "Speculation_Store_Bypass", "SpeculationIndirectBranch",
				"Cpus_allowed_list", "Mems_allowed_list", "SigBlk", "SigIgn":
				keep = append(keep, line)
			case "NSpid", "NStgid":
				keep = append(keep, fmt.Sprintf("%s levels: %d", k, len(strings.Fields(v))))
			}
		}
		return strings.Join(keep, "\n")
	}
	return s
}

func procFileRaw(t *testing.T, pid int, name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// seccompProgram returns the seccomp filter the kernel holds for pid
// (PTRACE_SECCOMP_GET_FILTER; the process is stopped meanwhile).
func seccompProgram(t *testing.T, pid int) []byte {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		t.Fatalf("ptrace %d: %v", pid, err)
	}
	defer func() { _ = unix.PtraceDetach(pid) }()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		t.Fatal(err)
	}
	const ptraceSeccompGetFilter = 0x420c
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), 0, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER %d: %v", pid, errno)
	}
	prog := make([]unix.SockFilter, n)
	if n > 0 {
		if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), 0, uintptr(unsafe.Pointer(&prog[0])), 0, 0); errno != 0 {
			t.Fatalf("PTRACE_SECCOMP_GET_FILTER %d: %v", pid, errno)
		}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(prog))), len(prog)*int(unsafe.Sizeof(unix.SockFilter{})))
}
