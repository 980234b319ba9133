package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/testutil"
)

// TestExecEarly checks the exec early path (a plain `exec NAME -- CMD` run
// before the Go runtime starts, from the plan start or the fast path left
// for the running init) against the Go path: it runs only when it has a plan of
// this init, gives the command's output and status, forwards signals, and
// leaves to Go, with Go's messages, whatever it should not do: a plan of
// an earlier init, a container whose record is not "created", a stopped
// container, a command that cannot be started.
func TestExecEarly(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("xearly")
	in.must("create", name, "--system", prebuilt(t, `{ }`))
	in.must("start", name)
	plan := filepath.Join(in.store.RuntimeRoot(), name, "nixcell-exec.plan")

	// early runs exec with GODEBUG=inittrace=1, which makes the Go
	// runtime print a line for each package it initialises: nothing
	// printed is the early path.
	early := func(env string, args ...string) (result, bool) {
		t.Helper()
		c := in.cmd(append([]string{"exec", name, "--"}, args...)...)
		c.Env = append(c.Env, "GODEBUG=inittrace=1", "NIXCELL_EXEC="+env)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		err := c.Run()
		code := 0
		if ee, ok := err.(interface{ ExitCode() int }); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var rest []string
		goRan := false
		for _, line := range strings.SplitAfter(errb.String(), "\n") {
			if strings.HasPrefix(line, "init ") {
				goRan = true
			} else if line != "" {
				rest = append(rest, line)
			}
		}
		return result{stdout: out.String(), stderr: strings.Join(rest, ""), code: code}, !goRan
	}

	// start leaves the plan: the first exec takes the early path.
	if _, err := os.Stat(plan); err != nil {
		t.Fatalf("start left no plan: %v", err)
	}
	if r, was := early("", "true"); r.code != 0 || !was {
		t.Fatalf("first exec: %s, early path %v", r, was)
	}
	// Without a plan, Go execs and leaves one.
	if err := os.Remove(plan); err != nil {
		t.Fatal(err)
	}
	if r, was := early("", "true"); r.code != 0 || was {
		t.Fatalf("exec without a plan: %s, early path %v", r, was)
	}
	if _, err := os.Stat(plan); err != nil {
		t.Fatalf("the fast path left no plan: %v", err)
	}
	script := "echo out; echo err >&2; exit 7"
	want, _ := early("fast", "sh", "-c", script)
	if got, was := early("", "sh", "-c", script); got != want || !was {
		t.Errorf("early path: %s (early %v); fast path: %s", got, was, want)
	}
	if want.code != 7 || want.stdout != "out\n" || want.stderr != "err\n" {
		t.Errorf("fast path: %s", want)
	}
	if got, was := early("", "sh", "-c", "kill -USR1 $$"); got.code != 128+int(syscall.SIGUSR1) || !was {
		t.Errorf("a command killed by SIGUSR1: %s, early path %v", got, was)
	}
	// Failures before the command runs are Go's to say.
	for _, args := range [][]string{{"no-such-command"}, {"/etc"}} {
		want, _ := early("fast", args...)
		if got, _ := early("", args...); got != want || got.code != 125 {
			t.Errorf("%v: %s; fast path: %s", args, got, want)
		}
	}

	t.Run("signals", func(t *testing.T) {
		c := in.cmd("exec", name, "--", "sh", "-c", `trap "exit 42" TERM; while :; do sleep 0.05; done`)
		var errb bytes.Buffer
		c.Stderr = &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
		// The shell has set its trap once it runs sleep.
		deadline := time.Now().Add(10 * time.Second)
		for !hasDescendant(c.Process.Pid, "sleep") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := threads(t, c.Process.Pid); n != 1 {
			t.Errorf("nixcell has %d threads: not the early path", n)
		}
		// SIGINT is the terminal's to send to the whole group: nixcell
		// ignores it, as the Go path does.
		_ = c.Process.Signal(syscall.SIGINT)
		_ = c.Process.Signal(syscall.SIGTERM)
		err := c.Wait()
		if c.ProcessState == nil || c.ProcessState.ExitCode() != 42 {
			t.Errorf("after SIGTERM: %v, stderr %q", err, errb.String())
		}
	})

	t.Run("destroying", func(t *testing.T) {
		rec, err := in.store.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, phase := range []state.Phase{state.Destroying, state.Creating} {
			marked := *rec
			marked.Phase = phase
			if err := in.store.Save(&marked); err != nil {
				t.Fatal(err)
			}
			want, _ := early("libcontainer", "true")
			got, was := early("", "true")
			if got != want || want.code == 0 || was {
				t.Errorf("exec into a %s container: %s (early path %v); libcontainer's path: %s", phase, got, was, want)
			}
		}
		if err := in.store.Save(rec); err != nil {
			t.Fatal(err)
		}
		if _, was := early("", "true"); !was {
			t.Error("no early path once the record says created again")
		}
	})

	t.Run("stale plan", func(t *testing.T) {
		old, err := os.ReadFile(plan)
		if err != nil {
			t.Fatal(err)
		}
		in.must("stop", name)
		want, _ := early("libcontainer", "true")
		if got, was := early("", "true"); got != want || want.code == 0 || was {
			t.Errorf("exec into the stopped container: %s (early path %v); libcontainer's path: %s", got, was, want)
		}
		in.must("start", name)
		// The old init's plan, where the new init's would be.
		if err := os.WriteFile(plan, old, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, was := early("", "true"); r.code != 0 || was {
			t.Errorf("exec with the plan of the previous init: %s, early path %v", r, was)
		}
		if now, err := os.ReadFile(plan); err != nil || bytes.Equal(now, old) {
			t.Errorf("the plan was not renewed (%v)", err)
		}
		if r, was := early("", "true"); r.code != 0 || !was {
			t.Errorf("exec with the renewed plan: %s, early path %v", r, was)
		}
	})
}

// hasDescendant tells whether a descendant of pid runs a program named comm.
func hasDescendant(pid int, comm string) bool {
	for _, c := range children(pid) {
		if got, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/comm"); string(got) == comm+"\n" || hasDescendant(c, comm) {
			return true
		}
	}
	return false
}
