package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
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
