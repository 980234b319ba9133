package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/testutil"
)

// benchInstance is newInstance for benchmarks.
func benchInstance(b *testing.B) *instance {
	testutil.RequiresRoot(b)
	testutil.RequiresCommands(b, "nix-build")
	dir := testutil.StateDir(b)
	in := &instance{dir: dir, bin: bin}
	var err error
	if in.store, err = state.New(dir); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		names, _ := in.store.Names()
		for _, n := range names {
			_ = in.cmd("destroy", "--timeout", "5s", n).Run()
		}
		_ = os.RemoveAll(in.store.Run)
	})
	return in
}

func (in *instance) benchMust(b *testing.B, args ...string) {
	b.Helper()
	if out, err := in.cmd(args...).CombinedOutput(); err != nil {
		b.Fatalf("nixcell %v: %v\n%s", args, err, out)
	}
}

// BenchmarkCreate measures create from a prebuilt system (--system): the
// state, the ID range and the profile generation, without a Nix build.
func BenchmarkCreate(b *testing.B) {
	in := benchInstance(b)
	system := prebuilt(b, webConfig)
	for i := 0; i < b.N; i++ {
		name := testutil.Name("bcreate")
		in.benchMust(b, "create", name, "--system", system)
		b.StopTimer()
		in.benchMust(b, "destroy", name)
		b.StartTimer()
	}
}

// BenchmarkStart measures start until the command returns (the init runs).
func BenchmarkStart(b *testing.B) {
	in := benchInstance(b)
	name := testutil.Name("bstart")
	in.benchMust(b, "create", name, "--system", prebuilt(b, `{ }`))
	for i := 0; i < b.N; i++ {
		in.benchMust(b, "start", name)
		b.StopTimer()
		in.benchMust(b, "terminate", name)
		b.StartTimer()
	}
}

// BenchmarkStartToService measures start until the container's HTTP server
// accepts a connection on its loopback (connecting from inside its network
// namespace), the figure compared with LXC's and nspawn's start.
func BenchmarkStartToService(b *testing.B) {
	in := benchInstance(b)
	name := testutil.Name("bservice")
	in.benchMust(b, "create", name, "--system", prebuilt(b, `{ services.httpd.enable = true; }`))
	for i := 0; i < b.N; i++ {
		in.benchMust(b, "start", name)
		pid, err := initPid(in, name)
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !dialInNetns(pid, "127.0.0.1:80") {
			if time.Now().After(deadline) {
				b.Fatal("httpd did not answer within 10s")
			}
			time.Sleep(200 * time.Microsecond)
		}
		b.StopTimer()
		in.benchMust(b, "terminate", name)
		b.StartTimer()
	}
}

// BenchmarkExec measures exec of /bin/true's equivalent in a running
// container.
func BenchmarkExec(b *testing.B) {
	in := benchInstance(b)
	name := testutil.Name("bexec")
	in.benchMust(b, "create", name, "--system", prebuilt(b, `{ }`))
	in.benchMust(b, "start", name)
	for i := 0; i < b.N; i++ {
		in.benchMust(b, "exec", name, "--", "true")
	}
}

// BenchmarkStop measures a clean stop (SIGRTMIN+3, the init exits).
func BenchmarkStop(b *testing.B) {
	in := benchInstance(b)
	name := testutil.Name("bstop")
	in.benchMust(b, "create", name, "--system", prebuilt(b, `{ }`))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		in.benchMust(b, "start", name)
		// Stop waits for the init's handler; let it install first so the
		// figure is the shutdown, not the boot.
		time.Sleep(50 * time.Millisecond)
		b.StartTimer()
		in.benchMust(b, "stop", name)
	}
}

// initPid reads the init's PID from libcontainer's state without running
// another command inside the measured time.
func initPid(in *instance, name string) (int, error) {
	data, err := os.ReadFile(filepath.Join(in.store.RuntimeRoot(), name, "state.json"))
	if err != nil {
		return 0, err
	}
	var st struct {
		Pid int `json:"init_process_pid"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, err
	}
	return st.Pid, nil
}

// dialInNetns connects to addr from inside the network namespace of pid,
// on a thread that is thrown away afterwards.
func dialInNetns(pid int, addr string) bool {
	ok := make(chan bool)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			ok <- false
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ok <- false
			return
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		ok <- err == nil
	}()
	return <-ok
}

// manyPaths is a fixture configuration whose system's closure holds 1000
// more store paths (one per /etc file), about a NixOS system's.
const manyPaths = `{ environment.etc = builtins.listToAttrs (builtins.genList (i: { name = "bench/f${toString i}"; value.text = "${toString i}\n"; }) 1000); }`

// BenchmarkStartStore measures start (until the command returns) with the
// whole store visible and with only the system's closure (store =
// "closure"), for the fixture's system (a handful of paths) and for one
// with 1000 more paths in its closure.
func BenchmarkStartStore(b *testing.B) {
	for _, c := range []struct{ name, store, config string }{
		{"full", "full", "{ }"},
		{"closure", "closure", "{ }"},
		{"full-1000", "full", manyPaths},
		{"closure-1000", "closure", manyPaths},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := benchInstance(b)
			name := testutil.Name("bstore")
			file := filepath.Join(b.TempDir(), "c.nix")
			config := fmt.Sprintf("{ store = %q; configuration = %s; }", c.store, c.config)
			if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
				b.Fatal(err)
			}
			in.benchMust(b, "create", name, file, "-n", testutil.NixArgs())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in.benchMust(b, "start", name)
				b.StopTimer()
				in.benchMust(b, "terminate", name)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkScale starts 201 networked containers (with a service each) one
// after another and reports what must not grow with their number: the
// start of the 201st against the 1st, `list` with 200 running, the resident
// memory of the host processes running containers need (the instance's
// name server and console agent: nothing runs per container), and the
// kernel's memory (slab, page tables, kernel stacks) per idle container.
// The 1st's start is the median of scaleRounds starts (each followed by a
// stop) of the first container with nothing else running, so each
// includes what a first start does (the name server and console agent
// start with it); the 201st's the median of as many of the last container
// with the 200 others running (run it with -benchtime 1x).
func BenchmarkScale(b *testing.B) {
	in := benchInstance(b)
	in.env = append(in.env, "NIXCELL_HOSTONLY_SUBNET=10.250.0.0/16", "NIXCELL_NAT_SUBNET=10.251.0.0/16")
	system := prebuilt(b, `{ services.httpd.enable = true; }`)
	const count, scaleRounds = 201, 15
	names := make([]string, count)
	for i := range names {
		names[i] = testutil.Name(fmt.Sprintf("bs%d", i))
		in.benchMust(b, "create", names[i], "--system", system)
	}
	// startMedian is the median time of scaleRounds starts of name, each
	// stopped again (not timed).
	startMedian := func(name string) time.Duration {
		var took []time.Duration
		for range scaleRounds {
			start := time.Now()
			in.benchMust(b, "start", name)
			took = append(took, time.Since(start))
			b.StopTimer()
			in.benchMust(b, "terminate", name)
			b.StartTimer()
		}
		slices.Sort(took)
		return took[len(took)/2]
	}
	var first, last, list time.Duration
	var hostKiB, kernelKiB float64
	for n := 0; n < b.N; n++ {
		kernelBefore := kernelMemKiB(b)
		first += startMedian(names[0])
		for i := 0; i < count-1; i++ {
			in.benchMust(b, "start", names[i])
		}
		// 200 run: what each idle container costs the host.
		time.Sleep(2 * time.Second) // their services are up and idle
		kernelKiB += float64(kernelMemKiB(b)-kernelBefore) / (count - 1)
		hostKiB += float64(hostProcessesKiB(b, in))
		start := time.Now()
		in.benchMust(b, "list")
		list += time.Since(start)
		last += startMedian(names[count-1])
		b.StopTimer()
		for i := 0; i < count-1; i++ {
			in.benchMust(b, "terminate", names[i])
		}
		b.StartTimer()
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(first), "ms/start-1st")
	b.ReportMetric(per(last), "ms/start-201st")
	b.ReportMetric(per(last)/per(first), "ratio-201st/1st")
	b.ReportMetric(per(list), "ms/list-200")
	b.ReportMetric(hostKiB/float64(b.N), "KiB-host-processes")
	b.ReportMetric(kernelKiB/float64(b.N), "KiB-kernel/container")
}

// kernelMemKiB is the kernel's own memory: slab, page tables and kernel
// stacks (/proc/meminfo).
func kernelMemKiB(b *testing.B) int {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "Slab" || k == "PageTables" || k == "KernelStack" {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			total += n
		}
	}
	return total
}

// hostProcessesKiB is the resident memory of the instance's processes on
// the host (those naming its state or run directory: the name server, the
// console agent), in KiB. The containers' own processes are not counted.
func hostProcessesKiB(b *testing.B, in *instance) int {
	total := 0
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		cmd, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(cmd, []byte(in.dir)) && !bytes.Contains(cmd, []byte(in.store.Run)) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(filepath.Dir(f), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				total += n
			}
		}
	}
	return total
}
