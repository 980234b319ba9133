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
// through exec's fast path (NIXCELL_EXEC=fast: no fallback) and another
// through libcontainer's setns path (NIXCELL_EXEC=libcontainer), and
// compares what the kernel says of both: credentials, capability sets,
// no_new_privs, the seccomp filter's program, ID maps, cgroups,
// namespaces, root and working directory, environment, limits, session.
// Any drift of the fast path from libcontainer's shows here.
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
			fast := in.sleeper(name, "fast")
			slow := in.sleeper(name, "libcontainer")
			for _, f := range []string{"status", "uid_map", "gid_map", "setgroups", "cgroup", "environ", "limits", "oom_score_adj", "stat"} {
				a, b := procFile(t, fast, f), procFile(t, slow, f)
				if a != b {
					t.Errorf("/proc/PID/%s differs:\nfast path:\n%s\nlibcontainer:\n%s", f, a, b)
				}
			}
			for _, l := range []string{"root", "cwd", "ns/user", "ns/mnt", "ns/pid", "ns/pid_for_children", "ns/uts", "ns/ipc", "ns/net", "ns/cgroup", "ns/time", "ns/time_for_children"} {
				a, errA := os.Readlink(fmt.Sprintf("/proc/%d/%s", fast, l))
				b, errB := os.Readlink(fmt.Sprintf("/proc/%d/%s", slow, l))
				if errA != nil || errB != nil || a != b {
					t.Errorf("/proc/PID/%s: fast path %q (%v), libcontainer %q (%v)", l, a, errA, b, errB)
				}
			}
			a, b := seccompProgram(t, fast), seccompProgram(t, slow)
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("seccomp programs differ: fast path %d bytes, libcontainer %d bytes", len(a), len(b))
			}
			if got := procFile(t, fast, "status"); !strings.Contains(got, "NoNewPrivs:\t1") || !strings.Contains(got, "Seccomp:\t2") {
				t.Errorf("fast path process without no_new_privs or seccomp:\n%s", got)
			}
		})
	}
}

// sleeper starts `sleep 1000` in the container through the given exec
// path and returns its host PID; the test's end kills it.
func (in *instance) sleeper(name, path string) int {
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
				return child
			}
		}
		if c.ProcessState != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	in.t.Fatalf("exec (%s) did not start sleep: %s", path, stderr.String())
	return 0
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
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
				"Cpus_allowed_list", "Mems_allowed_list":
				keep = append(keep, line)
			case "NSpid", "NStgid":
				keep = append(keep, fmt.Sprintf("%s levels: %d", k, len(strings.Fields(v))))
			}
		}
		return strings.Join(keep, "\n")
	}
	return s
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
