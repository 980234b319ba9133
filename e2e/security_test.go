package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	libseccomp "github.com/seccomp/libseccomp-golang"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

// deniedSyscalls is what the seccomp filter must deny with EPERM, stated
// here independently of the runtime's list. Calls that do not exist on the
// test's architecture are skipped.
var deniedSyscalls = []string{
	"init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
	"kexec_load", "kexec_file_load", "swapon", "swapoff",
	"settimeofday", "stime", "clock_settime", "adjtimex", "clock_adjtime",
	"iopl", "ioperm", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
	"add_key", "keyctl", "request_key", "bpf", "perf_event_open", "lookup_dcookie", "syslog",
	"open_by_handle_at", "fanotify_init", "fanotify_mark", "acct", "quotactl", "quotactl_fd",
	"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"modify_ldt", "vm86", "vm86old", "_sysctl", "nfsservctl", "uselib", "ustat", "sysfs", "bdflush",
}

// probe builds e2e/probe, a static program that makes raw system calls.
func probe(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "nixcell-probe")
	build := exec.Command("go", "build", "-o", out, "./e2e/probe")
	build.Dir = testutil.ProjectRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, msg)
	}
	return out
}

// installProbe copies the probe into the running container's /usr/bin.
func (in *instance) installProbe(name, probe string) {
	in.t.Helper()
	data, err := os.ReadFile(probe)
	if err != nil {
		in.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.store.RootFS(name), "usr/bin/nixcell-probe"), data, 0o755); err != nil {
		in.t.Fatal(err)
	}
}

// probeLines runs the probe in the container and returns its answers by
// name.
func (in *instance) probeLines(name string, args ...string) map[string]string {
	in.t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(in.exec(name, append([]string{"nixcell-probe"}, args...)...)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			got[f[0]] = f[1]
		}
	}
	return got
}

// TestSeccompFilter checks that the filter is installed for the init and
// exec'd processes, that each listed call fails with EPERM while others
// work, and that a privileged container is filtered the same way.
func TestSeccompFilter(t *testing.T) {
	in := newInstance(t)
	bin := probe(t)
	unpriv, priv := testutil.Name("filtered"), testutil.Name("privfiltered")
	in.create(unpriv, `{ }`)
	in.must(append([]string{"create", priv, "--privileged", "-c", `{ }`}, nixArgs...)...)

	numbers := []string{}
	byNumber := map[string]string{}
	for _, name := range deniedSyscalls {
		nr, err := libseccomp.GetSyscallFromName(name)
		if err != nil || nr < 0 {
			continue // not a system call on this architecture
		}
		n := strconv.Itoa(int(nr))
		numbers = append(numbers, n)
		byNumber[n] = name
	}
	getpid, err := libseccomp.GetSyscallFromName("getpid")
	if err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{unpriv, priv} {
		t.Run(name, func(t *testing.T) {
			in.must("start", name)
			in.installProbe(name, bin)
			for _, proc := range []string{"/proc/1/status", "/proc/self/status"} {
				mode := strings.TrimSpace(in.exec(name, "sh", "-c", "grep ^Seccomp: "+proc))
				if mode != "Seccomp:\t2" {
					t.Errorf("%s inside says %q, want a filter (Seccomp: 2)", proc, mode)
				}
			}
			got := in.probeLines(name, append([]string{"syscall", strconv.Itoa(int(getpid))}, numbers...)...)
			for _, n := range numbers {
				if got[n] != "EPERM" {
					t.Errorf("%s (%s) answered %q, want EPERM", byNumber[n], n, got[n])
				}
			}
			if got[strconv.Itoa(int(getpid))] != "OK" {
				t.Errorf("getpid answered %q: the filter denies too much", got[strconv.Itoa(int(getpid))])
			}
			sockets := in.probeLines(name, "audit-socket")
			for k, v := range in.probeLines(name, "route-socket") {
				sockets[k] = v
			}
			if sockets["audit-socket"] != "EAFNOSUPPORT" || sockets["route-socket"] != "OK" {
				t.Errorf("netlink sockets: %v, want audit EAFNOSUPPORT and route OK", sockets)
			}
			// adjtimex(2) with no change only reads the clock's state; the
			// kernel allows that to anyone, so EPERM comes from the filter.
			if r := in.run("exec", name, "--", "adjtimex"); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
				t.Errorf("adjtimex (read-only) inside: %s, want EPERM", r)
			}
		})
	}
}

// hostRoot is the host's root file system as mountinfo describes it.
func hostRoot(t *testing.T) (source, majorMinor string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != "/" {
			continue
		}
		for i := 6; i < len(f)-2; i++ {
			if f[i] == "-" {
				return f[i+2], f[2]
			}
		}
	}
	t.Fatal("no root file system in /proc/self/mountinfo")
	return "", ""
}

// TestEscapeAttempts tries, as the root of an unprivileged container, what
// an attacker would try first, and expects each to fail the way the kernel
// makes it fail.
func TestEscapeAttempts(t *testing.T) {
	in := newInstance(t)
	bin := probe(t)
	a, b := testutil.Name("attacker"), testutil.Name("victim")
	in.create(a, `{ }`)
	in.create(b, `{ }`)
	in.must("start", a)
	in.must("start", b)
	in.installProbe(a, bin)
	ids := in.info(a).IDs
	if ids == nil {
		t.Fatal("no ID range")
	}
	fails := func(t *testing.T, want string, args ...string) result {
		t.Helper()
		r := in.run(append([]string{"exec", a, "--"}, args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: %s; want failure with %q", strings.Join(args, " "), r, want)
		}
		return r
	}

	t.Run("write-the-store", func(t *testing.T) {
		for _, dir := range []string{"/nix/store", "/nix/var/nix/db"} {
			marker := filepath.Join(dir, "nixcell-escape-"+a)
			fails(t, "Read-only file system", "touch", marker)
			// The read-only flag is locked: the container's root cannot
			// remount it read-write (busybox says EPERM this way).
			fails(t, "permission denied", "mount", "-o", "remount,bind,rw", dir)
			fails(t, "Read-only file system", "touch", marker)
			if _, err := os.Lstat(marker); err == nil {
				os.Remove(marker)
				t.Errorf("the container created %s on the host", marker)
			}
		}
	})
	t.Run("plant-a-setuid-program-for-host-users", func(t *testing.T) {
		// The profile is the host's and read-only inside.
		fails(t, "Read-only file system", "cp", "/run/current-system/sw/bin/busybox", "/nix/var/nix/profiles/evil")
		// The GC roots are the container's: what its root plants there
		// is owned by its range on the host, not by the host's root, and
		// sits below a directory host users cannot enter.
		in.exec(a, "sh", "-c", "cp /run/current-system/sw/bin/busybox /nix/var/nix/gcroots/evil && chmod 4755 /nix/var/nix/gcroots/evil")
		evil := filepath.Join(nix.GCRootsDir, a, "evil")
		if got, want := owner(t, evil), fmt.Sprintf("%d:%d", ids.Start, ids.Start); got != want {
			t.Errorf("the container root's program is owned by %s on the host, want %s", got, want)
		}
		// As nobody on the host (busybox as "id"; it drops the setuid
		// privilege itself, so it only shows that the program ran).
		cmd := &exec.Cmd{Path: evil, Args: []string{"id", "-u"},
			SysProcAttr: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}}
		out, err := cmd.CombinedOutput()
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("a host user ran the container's setuid program: %v, output %q", err, out)
		}
		for _, dir := range []string{nix.ProfilesDir, nix.GCRootsDir} {
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s is open to other users: %v %v", dir, fi.Mode(), err)
			}
		}
	})
	t.Run("make-a-device-in-dev", func(t *testing.T) {
		// /dev is a tmpfs of the host's user namespace, where the host made
		// the standard nodes: the container's root can make none (that
		// takes CAP_MKNOD in the host's namespace), nor remount it.
		fails(t, "Operation not permitted", "mknod", "/dev/evil", "c", "1", "1")
		fails(t, "permission denied", "mount", "-o", "remount,suid", "/dev")
	})
	t.Run("load-a-module", func(t *testing.T) {
		fails(t, "Operation not permitted", "sh", "-c", "echo x > /tmp/evil.ko && insmod /tmp/evil.ko")
	})
	t.Run("mount-the-host-disk", func(t *testing.T) {
		source, dev := hostRoot(t)
		if strings.HasPrefix(source, "/dev/") {
			// No device node of the host's disks exists inside.
			fails(t, "No such file or directory", "mount", source, "/mnt")
		}
		maj, min, _ := strings.Cut(dev, ":")
		fails(t, "Operation not permitted", "mknod", "/tmp/disk", "b", maj, min)
	})
	t.Run("see-host-processes", func(t *testing.T) {
		hostInit, _ := os.ReadFile("/proc/1/cmdline")
		if got := in.exec(a, "cat", "/proc/1/cmdline"); got == string(hostInit) || !strings.Contains(got, "/nix/var/nix/profiles/system/init") {
			t.Errorf("PID 1 inside runs %q (the host's runs %q)", got, hostInit)
		}
		// Every process ps shows inside is one of the container's: its
		// PID is the inner PID (NSpid) of a process in the container's
		// cgroup.
		ps := in.exec(a, "ps", "-o", "pid,args")
		inner := map[string]bool{}
		for _, pid := range in.cgroupProcs(a) {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			for _, line := range strings.Split(string(status), "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
					inner[f[len(f)-1]] = true
				}
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(ps), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 1 && !inner[f[0]] && !strings.Contains(line, "ps -o") {
				t.Errorf("ps inside lists a process that is not the container's: %q", line)
			}
		}
		self, _ := os.ReadFile("/proc/self/cmdline")
		r := in.run("exec", a, "--", "cat", fmt.Sprintf("/proc/%d/cmdline", os.Getpid()))
		if r.code == 0 && r.stdout == string(self) {
			t.Errorf("the test's own process is visible inside")
		}
	})
	t.Run("reach-another-container", func(t *testing.T) {
		marker := "secret-" + b
		in.exec(b, "sh", "-c", "echo secret > /root/"+marker)
		fails(t, "No such file or directory", "ls", in.store.RootFS(b))
		// Nothing of b is anywhere in a's tree (the store is the host's).
		if got := in.exec(a, "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", "/nix", ")", "-prune", "-o", "-name", marker, "-print"); got != "" {
			t.Errorf("a finds b's file: %q", got)
		}
		// /proc/1/root is a's own root, never the host's.
		fails(t, "No such file or directory", "ls", "/proc/1/root"+in.dir)
		victim := in.info(b).Pid
		if victim < 1000 {
			// Such a small host PID may also be one of a's own.
			t.Skipf("b's init has host PID %d; cannot tell it from a's PIDs", victim)
		}
		fails(t, "No such process", "kill", "-0", strconv.Itoa(victim))
		if got := in.probeLines(a, "ptrace", strconv.Itoa(victim)); got["ptrace"] != "ESRCH" {
			t.Errorf("ptrace of b's init (host PID %d) from a: %v, want ESRCH", victim, got)
		}
	})
	t.Run("change-the-clock", func(t *testing.T) {
		// busybox date reports the failure but exits 0.
		if r := in.run("exec", a, "--", "date", "-s", "2001-01-01 00:00:00"); !strings.Contains(r.stderr, "can't set date: Operation not permitted") {
			t.Errorf("date -s: %s; want EPERM", r)
		}
		if time.Now().Year() < 2020 {
			t.Errorf("the host's clock says %v", time.Now())
		}
	})
	t.Run("map-host-root-in-a-nested-userns", func(t *testing.T) {
		// Root inside may create user namespaces (systemd does), but IDs
		// map only within the container's own range: uid 65536 is outside
		// it, and "0 0 1" maps to the container's root, not the host's.
		script := `
unshare -U sleep 60 </dev/null >/dev/null 2>&1 & x=$!
unshare -U sleep 60 </dev/null >/dev/null 2>&1 & y=$!
me=$(readlink /proc/self/ns/user)
while [ "$(readlink /proc/$x/ns/user)" = "$me" ] || [ "$(readlink /proc/$y/ns/user)" = "$me" ]; do sleep 0.05; done
echo "0 65536 1" > /proc/$x/uid_map && echo "mapped outside the range"
echo "0 0 1" > /proc/$y/uid_map || echo "could not map own root"
kill $x
echo $y`
		r := in.run("exec", a, "--", "sh", "-c", script)
		y, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if r.code != 0 || err != nil || !strings.Contains(r.stderr, "write error: Operation not permitted") {
			t.Fatalf("nested user namespaces: %s; want only the mapping outside the range refused", r)
		}
		defer in.run("exec", a, "--", "kill", strconv.Itoa(y))
		// From the host: the nested namespace's root is the container's
		// first ID, never 0.
		found := false
		for _, pid := range in.cgroupProcs(a) {
			m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
			f := strings.Fields(string(m))
			if len(f) == 3 && f[2] == "1" {
				found = true
				if f[0] != "0" || f[1] != strconv.Itoa(int(ids.Start)) {
					t.Errorf("nested uid_map seen from the host: %q, want 0 %d 1", m, ids.Start)
				}
			}
		}
		if !found {
			t.Error("the nested user namespace's process is not in the container's cgroup")
		}
	})
}

// cgroupV2 tells whether the host uses the unified cgroup hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// cgroupDir is the container's cgroup in the controller's hierarchy (v1),
// or in the unified one ("" or on a cgroup2 host), as its init's
// /proc/PID/cgroup says: nixcell's own path, or a scope systemd made.
func (in *instance) cgroupDir(name, controller string) string {
	in.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", in.info(name).Pid))
	if err != nil {
		in.t.Fatalf("reading the init's cgroups: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case (controller == "" || cgroupV2()) && f[0] == "0" && f[1] == "":
			if cgroupV2() {
				return filepath.Join("/sys/fs/cgroup", f[2])
			}
			return filepath.Join("/sys/fs/cgroup/unified", f[2])
		case controller != "" && !cgroupV2() && slices.Contains(strings.Split(f[1], ","), controller):
			return filepath.Join("/sys/fs/cgroup", controller, f[2])
		}
	}
	in.t.Fatalf("no %s cgroup of %s in %q", controller, name, data)
	return ""
}

// cgroupFile reads one of the container's cgroup files from the host:
// v1File in the v1 controller's hierarchy, or v2File on a cgroup2 host.
func (in *instance) cgroupFile(name, controller, v1File, v2File string) string {
	in.t.Helper()
	p := filepath.Join(in.cgroupDir(name, controller), v1File)
	if cgroupV2() {
		p = filepath.Join(in.cgroupDir(name, controller), v2File)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		in.t.Fatalf("reading the container's cgroup: %v", err)
	}
	return strings.TrimSpace(string(data))
}

// cgroupProcs lists the host PIDs in the container's cgroup.
func (in *instance) cgroupProcs(name string) []int {
	var pids []int
	for _, f := range strings.Fields(in.cgroupFile(name, "pids", "cgroup.procs", "cgroup.procs")) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// kernelLimits are the container's limits as its cgroup files say, "max"
// when unlimited: memory in bytes, CPU quota in µs per 100 ms, pids.
type kernelLimits struct{ memory, cpuQuota, pids string }

func (in *instance) kernelLimits(name string) kernelLimits {
	in.t.Helper()
	var k kernelLimits
	k.memory = in.cgroupFile(name, "memory", "memory.limit_in_bytes", "memory.max")
	if n, err := strconv.ParseUint(k.memory, 10, 64); err == nil && n >= 1<<62 {
		k.memory = "max" // cgroup v1's "no limit"
	}
	if cgroupV2() {
		k.cpuQuota, _, _ = strings.Cut(in.cgroupFile(name, "cpu", "", "cpu.max"), " ")
	} else {
		k.cpuQuota = in.cgroupFile(name, "cpu", "cpu.cfs_quota_us", "")
		if k.cpuQuota == "-1" {
			k.cpuQuota = "max"
		}
	}
	k.pids = in.cgroupFile(name, "pids", "pids.max", "pids.max")
	return k
}

// cgroupEvent returns the count of key in a flat-keyed cgroup file such as
// pids.events or memory.events.
func cgroupEvent(content, key string) int {
	s := bufio.NewScanner(strings.NewReader(content))
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), " "); ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// stats is nixcell stats --json.
type stats struct {
	Name   string `json:"name"`
	Memory struct {
		UsageBytes uint64 `json:"usageBytes"`
		LimitBytes uint64 `json:"limitBytes"`
		OOMKills   uint64 `json:"oomKills"`
	} `json:"memory"`
	CPU struct {
		UsageNanos uint64  `json:"usageNanos"`
		Limit      float64 `json:"limit"`
	} `json:"cpu"`
	Pids struct {
		Current uint64 `json:"current"`
		Limit   uint64 `json:"limit"`
	} `json:"pids"`
}

func (in *instance) stats(name string) stats {
	in.t.Helper()
	var s stats
	out := in.must("stats", "--json", name)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		in.t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return s
}

// TestForkBombStoppedByPidsLimit runs a fork bomb in a container limited to
// 64 processes: forks fail with EAGAIN, the kernel counts the refusals,
// and the container's init and the host carry on.
func TestForkBombStoppedByPidsLimit(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("forkbomb")
	in.create(name, `{ limits.pids = 64; configuration = { }; }`)
	in.must("start", name)
	init := in.info(name).Pid
	if got := in.kernelLimits(name).pids; got != "64" {
		t.Fatalf("pids.max = %s, want 64", got)
	}
	r := in.run("exec", name, "--", "sh", "-c", "while true; do sleep 5 & done")
	if r.code == 0 || !strings.Contains(r.stderr, "can't fork: Resource temporarily unavailable") {
		t.Errorf("fork bomb: %s; want it stopped by EAGAIN", r)
	}
	if n := cgroupEvent(in.cgroupFile(name, "pids", "pids.events", "pids.events"), "max"); n < 1 {
		t.Errorf("pids.events counts %d refused forks", n)
	}
	if s := in.stats(name); s.Pids.Limit != 64 || s.Pids.Current > 64 {
		t.Errorf("stats: pids %+v", s.Pids)
	}
	// The sleeps end after 5 s; then the container takes commands again.
	waitFor(t, 30*time.Second, "the container to take a command again", func() bool {
		return in.run("exec", name, "--", "true").code == 0
	})
	if i := in.info(name); i.State != "running" || i.Pid != init {
		t.Errorf("after the fork bomb: %+v (init was %d)", i, init)
	}
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("the host cannot start a process: %v", err)
	}
}

// TestMemoryHogOOMKilled fills the memory of a container limited to 64 MiB:
// the kernel's OOM killer ends the hog, the container lives on, and another
// container serves requests throughout.
func TestMemoryHogOOMKilled(t *testing.T) {
	in := newInstance(t)
	hog, web := testutil.Name("hog"), testutil.Name("neighbour")
	in.create(hog, `{ limits.memory = "64M"; configuration = { }; }`)
	in.create(web, webConfig)
	in.must("start", hog)
	in.must("start", web)
	in.waitHTTP(web, "hello from "+web+"\n")
	init := in.info(hog).Pid
	if got := in.kernelLimits(hog).memory; got != strconv.Itoa(64<<20) {
		t.Fatalf("memory limit = %s, want %d", got, 64<<20)
	}

	var served, failed atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if in.run("exec", web, "--", "wget", "-qO-", "http://127.0.0.1/").code == 0 {
				served.Add(1)
			} else {
				failed.Add(1)
			}
		}
	}()
	// Doubling a string 28 times wants 256 MiB of anonymous memory.
	r := in.run("exec", hog, "--", "awk", `BEGIN { s = "x"; for (i = 0; i < 28; i++) s = s s; print length(s) }`)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if r.code != 128+9 {
		t.Errorf("memory hog: %s; want it killed by SIGKILL (exit 137)", r)
	}
	oom := 0
	if cgroupV2() {
		oom = cgroupEvent(in.cgroupFile(hog, "", "", "memory.events"), "oom_kill")
	} else {
		oom = cgroupEvent(in.cgroupFile(hog, "memory", "memory.oom_control", ""), "oom_kill")
	}
	if oom < 1 {
		t.Errorf("the kernel counts %d OOM kills in the hog's cgroup", oom)
	}
	if s := in.stats(hog); s.Memory.LimitBytes != 64<<20 || s.Memory.OOMKills != uint64(oom) {
		t.Errorf("stats of the hog: memory %+v; want limit 64 MiB and the kernel's %d OOM kills", s.Memory, oom)
	}
	if i := in.info(hog); i.State != "running" || i.Pid != init {
		t.Errorf("hog container after the OOM kill: %+v (init was %d)", i, init)
	}
	in.exec(hog, "true")
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("the neighbour served %d requests and failed %d while the hog ran", served.Load(), failed.Load())
	}
}

// TestLimitsUpdateLive changes limits with update, from the configuration
// and from flags, while the container runs: the init is not restarted and
// the kernel enforces the new values at once. A limit the kernel refuses
// changes nothing; a stopped container gets new limits at its next start.
func TestLimitsUpdateLive(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("limited")
	configWith := func(memory string, cpus string, pids int, module string) string {
		return nixFile(t, "limits.nix", fmt.Sprintf(`{ limits = { memory = %q; cpus = %s; pids = %d; };
  configuration = { services.httpd.enable = true; %s }; }`, memory, cpus, pids, module))
	}
	config := func(memory string, cpus string, pids int) string { return configWith(memory, cpus, pids, "") }
	// --pids overrides the file's pids and stays until a flag changes it.
	in.must(append([]string{"create", name, config("128M", "1", 100), "--pids", "90"}, nixArgs...)...)
	in.must("start", name)
	init := in.info(name).Pid
	want := func(step string, k kernelLimits) {
		t.Helper()
		if got := in.kernelLimits(name); got != k {
			t.Errorf("%s: the kernel's limits are %+v, want %+v", step, got, k)
		}
	}
	want("after start", kernelLimits{memory: strconv.Itoa(128 << 20), cpuQuota: "100000", pids: "90"})

	r := in.run(append([]string{"update", name, config("96M", "0.5", 80)}, nixArgs...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "limits now memory 96MiB, cpus 0.5, pids 90") {
		t.Fatalf("update with new limits: %s", r)
	}
	want("after update", kernelLimits{memory: strconv.Itoa(96 << 20), cpuQuota: "50000", pids: "90"})

	in.must("update", name, "--memory", "64M", "--pids", "max")
	want("after update --memory --pids", kernelLimits{memory: strconv.Itoa(64 << 20), cpuQuota: "50000", pids: "max"})
	s := in.stats(name)
	if s.Memory.LimitBytes != 64<<20 || s.CPU.Limit != 0.5 || s.Pids.Limit != 0 {
		t.Errorf("stats after update: %+v", s)
	}
	if p := in.info(name).Pid; p != init {
		t.Errorf("update restarted the init: pid %d, was %d", p, init)
	}

	// Below what the container uses: refused, and nothing changes.
	in.exec(name, "dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=16")
	before := in.must("state", "--json", name)
	r = in.run("update", name, "--memory", "4M", "--cpus", "2")
	if r.code != 1 || !strings.Contains(r.stderr, "nixcell: update "+name+": applying limits") {
		t.Errorf("update below usage: %s; want a refusal", r)
	}
	want("after the refused update", kernelLimits{memory: strconv.Itoa(64 << 20), cpuQuota: "50000", pids: "max"})
	if after := in.must("state", "--json", name); after != before {
		t.Errorf("the refused update changed the record:\n%s\n%s", before, after)
	}

	// A failed switch undoes the limits applied before it.
	r = in.run(append([]string{"update", name, configWith("48M", "0.25", 70, "system.fixture.failSwitch = true;")}, nixArgs...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "switch-to-configuration failed") {
		t.Errorf("update with a failing switch: %s", r)
	}
	want("after the failed switch", kernelLimits{memory: strconv.Itoa(64 << 20), cpuQuota: "50000", pids: "max"})

	// A stopped container gets its new limits at the next start.
	in.must("stop", name)
	in.must("update", name, "--cpus", "2", "--memory", "max")
	in.must("start", name)
	want("after stop, update, start", kernelLimits{memory: "max", cpuQuota: "200000", pids: "max"})
}

// TestStats reads a running container's resource use.
func TestStats(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("stats")
	in.create(name, `{ limits = { memory = "256M"; cpus = 1.5; pids = 500; }; configuration = { services.httpd.enable = true; }; }`)
	if r := in.run("stats", name); r.code != 1 || !strings.Contains(r.stderr, "nixcell: stats "+name+": it is not running") {
		t.Errorf("stats of a stopped container: %s", r)
	}
	in.must("start", name)
	in.waitHTTP(name, "hello from "+name+"\n")
	in.exec(name, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	s := in.stats(name)
	if s.Name != name || s.Memory.UsageBytes == 0 || s.CPU.UsageNanos == 0 || s.Pids.Current < 1 {
		t.Errorf("stats: %+v; want real usage", s)
	}
	if s.Memory.LimitBytes != 256<<20 || s.CPU.Limit != 1.5 || s.Pids.Limit != 500 {
		t.Errorf("stats limits: %+v", s)
	}
	out := in.must("stats", name)
	for _, want := range []string{"memory", "limit 256MiB", "cpu", "limit 1.5 CPUs", "pids", "limit 500"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
}

// TestAllowedDevices gives a container /dev/net/tun: it can open the node,
// which another container does not even have.
func TestAllowedDevices(t *testing.T) {
	in := newInstance(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testutil.Skip(t, "the host has no /dev/net/tun")
	}
	with, without := testutil.Name("tun"), testutil.Name("notun")
	in.create(with, `{ allowedDevices = [ { node = "/dev/net/tun"; modifier = "rw"; } ]; configuration = { }; }`)
	in.create(without, `{ }`)
	in.must("start", with)
	in.must("start", without)
	// Reading a tun device that was opened but not attached fails with
	// EBADFD: the open itself worked.
	if r := in.run("exec", with, "--", "cat", "/dev/net/tun"); !strings.Contains(r.stderr, "File descriptor in bad state") {
		t.Errorf("opening the allowed /dev/net/tun: %s", r)
	}
	if owner := strings.Fields(in.exec(with, "ls", "-ln", "/dev/net/tun")); len(owner) < 4 || owner[2] != "0" {
		t.Errorf("the device is not the container root's: %v", owner)
	}
	if r := in.run("exec", without, "--", "cat", "/dev/net/tun"); r.code == 0 || !strings.Contains(r.stderr, "No such file") {
		t.Errorf("/dev/net/tun in a container that was not given it: %s", r)
	}
	missing := testutil.Name("nodev")
	in.create(missing, `{ allowedDevices = [ { node = "/dev/nonexistent"; modifier = "rw"; } ]; configuration = { }; }`)
	if r := in.run("start", missing); r.code != 1 || !strings.Contains(r.stderr, "allowedDevices: /dev/nonexistent does not exist on the host") {
		t.Errorf("start with a missing device: %s", r)
	}
}
