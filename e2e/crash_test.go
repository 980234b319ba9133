package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// killAfter runs nixcell args and sends it SIGKILL after d, unless it
// ended before; it returns whether the kill ended it.
func (in *instance) killAfter(d time.Duration, args ...string) bool {
	in.t.Helper()
	c := in.cmd(args...)
	if err := c.Start(); err != nil {
		in.t.Fatal(err)
	}
	time.Sleep(d)
	_ = c.Process.Signal(syscall.SIGKILL)
	err := c.Wait()
	return err != nil && c.ProcessState.String() == "signal: killed"
}

// instanceChecks are doctor's checks of what the instance's containers
// leave on the host. (Its id-ranges check is the host's: ranges of other
// instances removed by hand are none of this test's business; the
// harness checks this instance's ranges.)
var instanceChecks = []string{"network", "run-records", "runtime-state", "host-dirs", "mounts",
	"container-cgroups", "links", "locks", "addresses", "partial-files"}

// noLeftovers fails the test when doctor finds anything of the
// instance's containers left over: mounts, cgroups, links, rules,
// addresses, locks, runtime state, run records, half-written files.
func (in *instance) noLeftovers(when string) {
	in.t.Helper()
	results, _ := in.doctor()
	for _, check := range instanceChecks {
		r, ok := results[check]
		if !ok {
			in.t.Errorf("%s: doctor has no check %s", when, check)
			continue
		}
		if r.Status != "ok" {
			in.t.Errorf("%s: doctor's %s: %s", when, check, r.Found)
		}
	}
}

// keepFiles writes files into the container's root through the
// container (as its root) and returns them, for rootIntact.
func (in *instance) keepFiles(name string) map[string]string {
	in.t.Helper()
	files := map[string]string{}
	var script []string
	for i := range 20 {
		p := fmt.Sprintf("/srv/keep/%02d", i)
		files[p] = fmt.Sprintf("data %d of %s", i, name)
		script = append(script, fmt.Sprintf("echo '%s' > %s", files[p], p))
	}
	in.exec(name, "sh", "-c", "mkdir -p /srv/keep && "+strings.Join(script, " && ")+" && sync")
	return files
}

// rootIntact fails the test unless every file of files is in the
// container's root, as written.
func (in *instance) rootIntact(when, name string, files map[string]string) {
	in.t.Helper()
	for p, want := range files {
		if got := strings.TrimSpace(in.readRoot(name, p)); got != want {
			in.t.Errorf("%s: %s of %s's root holds %q, want %q", when, p, name, got, want)
		}
	}
}

// spread calls f with n delays spread evenly from 0 to a quarter more
// than whole: kills that land anywhere in a command that takes whole,
// and a few after it ended.
func spread(whole time.Duration, n int, f func(d time.Duration)) {
	for i := range n {
		f(whole * 5 / 4 * time.Duration(i) / time.Duration(n))
	}
}

// killsEach is how many kills a command of TestKilledAnywhere takes,
// out of full (340 in all, of which over 200 land in the command): all of
// them with NIXCELL_E2E_KILLS=all, which takes several minutes; a fifth by
// default, so that the normal tier keeps to about a minute and still
// kills every command at spread delays.
func killsEach(full int) int {
	if os.Getenv("NIXCELL_E2E_KILLS") == "all" {
		return full
	}
	return max(3, full/5)
}

// timed returns how long nixcell args takes (the longest of three runs)
// and fails the test unless it succeeds; undo restores what it changed.
func (in *instance) timed(undo []string, args ...string) time.Duration {
	in.t.Helper()
	var longest time.Duration
	for range 3 {
		t0 := time.Now()
		in.must(args...)
		longest = max(longest, time.Since(t0))
		if undo != nil {
			in.must(undo...)
		}
	}
	return longest
}

// TestKilledAnywhere kills create, start, stop, update, rollback, clone,
// export, import and destroy with SIGKILL at delays spread over the whole
// command, 340 times in all with NIXCELL_E2E_KILLS=all, 68 by default (issue 13:
// crash consistency; TestFailpoints kills at the named steps). After each kill the next command of the same kind
// succeeds (or says clearly why not: the killed one finished first),
// doctor finds nothing left over, and no file of the container's root is
// lost.
func TestKilledAnywhere(t *testing.T) {
	in := newInstance(t)
	one := prebuilt(t, `{ services.httpd.enable = true; system.fixture.label = "one"; }`)
	two := prebuilt(t, `{ services.httpd.enable = true; system.fixture.label = "two"; }`)
	kills, ended := 0, 0
	kill := func(d time.Duration, args ...string) {
		if in.killAfter(d, args...) {
			kills++
		} else {
			ended++
		}
	}
	start := time.Now()
	defer func() {
		t.Logf("%d commands killed, %d ended before their kill, in %v", kills, ended, time.Since(start).Round(time.Second))
	}()

	t.Run("create", func(t *testing.T) {
		probe := testutil.Name("kc")
		whole := in.timed([]string{"destroy", probe}, "create", probe, "--system", one)
		spread(whole, killsEach(50), func(d time.Duration) {
			name := testutil.Name("kc")
			kill(d, "create", name, "--system", one)
			when := fmt.Sprintf("create killed after %v", d)
			if r := in.run("create", name, "--system", one); r.code != 0 && !(r.code == 1 && strings.Contains(r.stderr, "container already exists")) {
				t.Errorf("%s: create again: %s", when, r)
			}
			in.noLeftovers(when + ", then created again")
			in.must("destroy", name)
			in.expectTraces(when+", created again and destroyed", name)
		})
	})

	name := testutil.Name("kill")
	in.must("create", name, "--system", one)
	in.must("start", name)
	keep := in.keepFiles(name)
	in.must("stop", name)
	// running brings the container to running (want) or stopped with the
	// commands a user would run next, each of which must succeed.
	bring := func(when string, want bool) {
		t.Helper()
		running := in.info(name).State == "running"
		switch {
		case running && !want:
			if r := in.run("stop", name); r.code != 0 {
				t.Errorf("%s: stop: %s", when, r)
			}
		case !running && want:
			if r := in.run("start", name); r.code != 0 {
				t.Errorf("%s: start: %s", when, r)
			}
		}
	}
	after := func(when string) {
		t.Helper()
		in.noLeftovers(when)
		in.rootIntact(when, name, keep)
	}

	var startWhole time.Duration
	killStart := func(d time.Duration) {
		when := fmt.Sprintf("start killed after %v", d)
		kill(d, "start", name)
		// What a user does next: start it, or stop it when it runs.
		bring(when, true)
		bring(when, false)
		after(when)
	}
	t.Run("start", func(t *testing.T) {
		startWhole = in.timed([]string{"stop", name}, "start", name)
		spread(startWhole, killsEach(60), killStart)
	})

	t.Run("stop", func(t *testing.T) {
		in.must("start", name)
		whole := in.timed([]string{"start", name}, "stop", name)
		spread(whole, killsEach(50), func(d time.Duration) {
			when := fmt.Sprintf("stop killed after %v", d)
			kill(d, "stop", name)
			// The user stops it again: that finishes what the killed
			// stop left, or says it is not running (the kill came after
			// the init ended), having finished it all the same.
			if r := in.run("stop", name); r.code != 0 && !strings.Contains(r.stderr, "not running") {
				t.Errorf("%s: stop again: %s", when, r)
			}
			after(when)
			bring(when, true)
		})
		in.must("stop", name)
	})

	// update and rollback on the running container: the generation is
	// switched in place.
	in.must("start", name)
	t.Run("update", func(t *testing.T) {
		whole := in.timed([]string{"update", name, "--system", one}, "update", name, "--system", two)
		systems := []string{two, one}
		spread(whole, killsEach(40), func(d time.Duration) {
			when := fmt.Sprintf("update killed after %v", d)
			target := systems[kills%2]
			kill(d, "update", name, "--system", target)
			if r := in.run("update", name, "--system", target); r.code != 0 {
				t.Errorf("%s: update again: %s", when, r)
			}
			if got, want := in.label(name), map[string]string{one: "one", two: "two"}[target]; got != want {
				t.Errorf("%s, then updated again: the container runs %q, want %q", when, got, want)
			}
			in.must("delete-generations", name, "old")
			after(when)
		})
	})

	t.Run("rollback", func(t *testing.T) {
		in.must("update", name, "--system", one)
		in.must("delete-generations", name, "old")
		in.must("update", name, "--system", two)
		gens := in.generations(name)
		if len(gens) != 2 {
			t.Fatalf("generations %+v, want two", gens)
		}
		latest := fmt.Sprint(gens[1].Number)
		whole := in.timed([]string{"switch-generation", name, latest}, "rollback", name)
		spread(whole, killsEach(40), func(d time.Duration) {
			when := fmt.Sprintf("rollback killed after %v", d)
			kill(d, "rollback", name)
			// Back to the latest generation, whatever the rollback did.
			if r := in.run("switch-generation", name, latest); r.code != 0 {
				t.Errorf("%s: switch-generation %s: %s", when, latest, r)
			}
			if got := in.label(name); got != "two" {
				t.Errorf("%s, then switched back: the container runs %q, want two", when, got)
			}
			after(when)
		})
	})

	// clone of the running container (frozen for the copy), export and
	// import.
	t.Run("clone", func(t *testing.T) {
		probe := testutil.Name("kl")
		whole := in.timed([]string{"destroy", probe}, "clone", name, probe)
		spread(whole, killsEach(20), func(d time.Duration) {
			when := fmt.Sprintf("clone killed after %v", d)
			dst := testutil.Name("kl")
			kill(d, "clone", name, dst)
			// The source runs on, thawed, whatever the clone did.
			if got := in.info(name).State; got != "running" {
				t.Errorf("%s: the source is %s", when, got)
			}
			in.exec(name, "true")
			if r := in.run("clone", name, dst); r.code != 0 && !(r.code == 1 && strings.Contains(r.stderr, "already exists")) {
				t.Errorf("%s: clone again: %s", when, r)
			}
			in.must("destroy", dst)
			after(when)
		})
	})

	t.Run("export and import", func(t *testing.T) {
		dir := t.TempDir()
		archive := filepath.Join(dir, "whole.nixcell")
		whole := in.timed(nil, "export", name, "-o", archive)
		spread(whole, killsEach(20), func(d time.Duration) {
			when := fmt.Sprintf("export killed after %v", d)
			out := filepath.Join(dir, "killed.nixcell")
			_ = os.Remove(out)
			kill(d, "export", name, "-o", out)
			// The archive is there whole (an import takes it) or not at
			// all.
			if _, err := os.Stat(out); err == nil {
				dst := testutil.Name("ki")
				if r := in.run("import", out, dst); r.code != 0 {
					t.Errorf("%s: import of what it left: %s", when, r)
				}
				in.must("destroy", dst)
			}
			after(when)
		})
		// What the killed exports left beside the file goes with the
		// next export to it.
		in.must("export", name, "-o", filepath.Join(dir, "killed.nixcell"))
		if left, _ := filepath.Glob(filepath.Join(dir, ".killed.nixcell.partial-*")); len(left) > 0 {
			t.Errorf("after the killed exports, a whole one left %v", left)
		}
		probe := testutil.Name("ki")
		whole = in.timed([]string{"destroy", probe}, "import", archive, probe)
		spread(whole, killsEach(20), func(d time.Duration) {
			when := fmt.Sprintf("import killed after %v", d)
			dst := testutil.Name("ki")
			kill(d, "import", archive, dst)
			if r := in.run("import", archive, dst); r.code != 0 && !(r.code == 1 && strings.Contains(r.stderr, "already exists")) {
				t.Errorf("%s: import again: %s", when, r)
			}
			in.must("destroy", dst)
			in.expectTraces(when+", imported again and destroyed", dst)
			after(when)
		})
	})

	t.Run("destroy", func(t *testing.T) {
		probe := testutil.Name("kd")
		in.must("create", probe, "--system", one)
		in.must("start", probe)
		t0 := time.Now()
		in.must("destroy", probe)
		whole := time.Since(t0)
		spread(whole, killsEach(40), func(d time.Duration) {
			victim := testutil.Name("kd")
			in.must("create", victim, "--system", one)
			in.must("start", victim)
			when := fmt.Sprintf("destroy killed after %v", d)
			kill(d, "destroy", victim)
			if r := in.run("destroy", victim); r.code != 0 && !(r.code == 1 && strings.Contains(r.stderr, "no such container")) {
				t.Errorf("%s: destroy again: %s", when, r)
			}
			in.expectTraces(when+", destroyed again", victim)
			in.noLeftovers(when + ", destroyed again")
		})
	})

	// Most kills must land in the command (the spread reaches a quarter
	// past its longest run, so about a fifth do not); with all of them,
	// issue 13's 200. On a loaded machine a command's time varies more and
	// more of them come after it ended: start is killed again, at delays
	// inside its shortest part, until there are enough.
	want := (kills + ended) / 2
	if os.Getenv("NIXCELL_E2E_KILLS") == "all" {
		want = 200
		if kills < want {
			t.Run("more starts", func(t *testing.T) {
				if in.info(name).State == "running" {
					in.must("stop", name)
				}
				for i := 0; kills < want && i < 2*want; i++ {
					killStart(startWhole / 2 * time.Duration(i%20) / 20)
				}
			})
		}
	}
	in.must("destroy", name)
	if kills < want {
		t.Errorf("only %d commands were killed (%d ended first), want at least %d", kills, ended, want)
	}
}
