package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

// labelled is a web configuration whose label and page name a generation.
func labelled(label string) string {
	return fmt.Sprintf(`{ services.httpd.enable = true; services.httpd.text = "%[1]s\n"; system.fixture.label = "%[1]s"; }`, label)
}

type generation struct {
	Number  int    `json:"number"`
	System  string `json:"system"`
	Current bool   `json:"current"`
	Running bool   `json:"running"`
}

func (in *instance) generations(name string) []generation {
	in.t.Helper()
	var gens []generation
	if err := json.Unmarshal([]byte(in.must("list-generations", "--json", name)), &gens); err != nil {
		in.t.Fatal(err)
	}
	return gens
}

// numbers lists generation numbers, with the current one and the running
// one marked, e.g. "1 2c 3r".
func (in *instance) numbers(name string) string {
	in.t.Helper()
	var out []string
	for _, g := range in.generations(name) {
		s := strconv.Itoa(g.Number)
		if g.Current {
			s += "c"
		}
		if g.Running {
			s += "r"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// nixEnvGenerations is nix-env's own view of the profile: numbers, with the
// current one marked "c".
func nixEnvGenerations(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("nix-env", "-p", filepath.Join(nix.ProfilesDir, name, "system"), "--list-generations").Output()
	if err != nil {
		t.Fatalf("nix-env --list-generations: %v", err)
	}
	var gens []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(line, "(current)") {
			f[0] += "c"
		}
		gens = append(gens, f[0])
	}
	return strings.Join(gens, " ")
}

func stripRunning(s string) string { return strings.ReplaceAll(s, "r", "") }

// label is the label of the generation the running container activated
// (after a start, its init activates it just after it starts).
func (in *instance) label(name string) string {
	in.t.Helper()
	var r result
	// After a start, the boot's activation links /etc and then
	// /run/current-system: an exec can come before either (exec takes a
	// few milliseconds), and /etc is still the previous boot's then.
	waitFor(in.t, 20*time.Second, "the label of "+name, func() bool {
		r = in.run("exec", name, "--", "sh", "-c", "test -e /run/current-system && cat /etc/nixcell-fixture/label")
		return r.code == 0
	})
	return strings.TrimSpace(r.stdout)
}

// TestUpdateRunningInPlace updates, rolls back and switches a running
// container without rebooting it, and checks every step against nix-env.
func TestUpdateRunningInPlace(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("upd")
	in.create(name, labelled("one"))
	in.must("start", name)
	in.waitHTTP(name, "one\n")
	boot := in.info(name)

	r := in.run("update", name, "-c", labelled("two"))
	if r.code != 0 || !strings.Contains(r.stderr, name+": new generation 2, switched in place (") {
		t.Fatalf("update: %s", r)
	}
	in.waitHTTP(name, "two\n")
	if got := in.label(name); got != "two" {
		t.Errorf("label after update = %q", got)
	}
	if i := in.info(name); i.Pid != boot.Pid {
		t.Errorf("update rebooted the container: init pid %d -> %d", boot.Pid, i.Pid)
	}
	if got, want := in.numbers(name), "1 2cr"; got != want {
		t.Errorf("generations after update = %q, want %q", got, want)
	}
	if got, want := nixEnvGenerations(t, name), "1 2c"; got != want {
		t.Errorf("nix-env sees %q, want %q", got, want)
	}

	// The same configuration again makes no generation.
	r = in.run("update", name, "-c", labelled("two"))
	if r.code != 0 || !strings.Contains(r.stderr, "no change: generation 2 is current") {
		t.Errorf("unchanged update: %s", r)
	}
	// Without a source, the recorded one is rebuilt.
	if r := in.run("update", name); r.code != 0 || !strings.Contains(r.stderr, "no change") {
		t.Errorf("update from the recorded source: %s", r)
	}

	r = in.run("rollback", name)
	if r.code != 0 || !strings.Contains(r.stderr, "generation 1 (was 2), switched in place") {
		t.Fatalf("rollback: %s", r)
	}
	in.waitHTTP(name, "one\n")
	if got, want := in.numbers(name), "1cr 2"; got != want {
		t.Errorf("generations after rollback = %q, want %q", got, want)
	}
	if got, want := nixEnvGenerations(t, name), "1c 2"; got != want {
		t.Errorf("nix-env sees %q, want %q", got, want)
	}

	in.must("switch-generation", name, "2")
	in.waitHTTP(name, "two\n")
	if got := in.label(name); got != "two" {
		t.Errorf("label after switch-generation = %q", got)
	}
	if i := in.info(name); i.Pid != boot.Pid {
		t.Errorf("switch-generation rebooted the container")
	}
	if r := in.run("switch-generation", name, "9"); r.code != 1 || !strings.Contains(r.stderr, "there is no generation 9") {
		t.Errorf("switch to a missing generation: %s", r)
	}

	// --restart reboots into the new generation.
	r = in.run("update", "--restart", name, "-c", labelled("three"))
	if r.code != 0 || !strings.Contains(r.stderr, "new generation 3, restarted") {
		t.Fatalf("update --restart: %s", r)
	}
	in.waitHTTP(name, "three\n")
	if i := in.info(name); i.Pid == boot.Pid {
		t.Errorf("update --restart kept init pid %d", i.Pid)
	}
	if log := in.readRoot(name, "var/log/nixcell-fixture.log"); strings.Count(log, "start label=") != 2 {
		t.Errorf("expected exactly two boots in the init log:\n%s", log)
	}
}

// TestUpdateStopped updates and rolls back a stopped container: the
// generation applies at the next start.
func TestUpdateStopped(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("upds")
	in.create(name, labelled("one"))
	r := in.run("update", name, "-c", labelled("two"))
	if r.code != 0 || !strings.Contains(r.stderr, "new generation 2, boots at next start") {
		t.Fatalf("update: %s", r)
	}
	in.must("start", name)
	if got := in.label(name); got != "two" {
		t.Errorf("label = %q, want two", got)
	}
	in.must("stop", name)
	in.must("rollback", name)
	if r := in.run("rollback", name); r.code != 1 || !strings.Contains(r.stderr, "there is no generation before 1") {
		t.Errorf("second rollback: %s", r)
	}
	in.must("start", name)
	if got := in.label(name); got != "one" {
		t.Errorf("label after rollback = %q, want one", got)
	}
	if got, want := in.numbers(name), "1cr 2"; got != want {
		t.Errorf("generations = %q, want %q", got, want)
	}
}

// TestUpdateFailures checks that a failed build and a failed switch leave
// the container as it was.
func TestUpdateFailures(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("updf")
	in.create(name, labelled("one"))
	in.must("start", name)
	in.waitHTTP(name, "one\n")
	before := in.info(name)

	r := in.run("update", name, "-c", `{ system.fixture.failBuild = true; }`)
	if r.code != 1 || !strings.Contains(r.stderr, "fixture: build failed on purpose") {
		t.Errorf("failing build: %s", r)
	}
	r = in.run("update", name, "-c", `{ services.httpd.enable = true; services.httpd.text = "broken\n"; system.fixture.label = "broken"; system.fixture.failSwitch = true; }`)
	if r.code != 1 || !strings.Contains(r.stderr, "switch-to-configuration failed") || !strings.Contains(r.stderr, "generation 1 was switched back in") {
		t.Errorf("failing switch: %s", r)
	}
	if got, want := in.numbers(name), "1cr"; got != want {
		t.Errorf("generations after the failures = %q, want %q", got, want)
	}
	if got, want := nixEnvGenerations(t, name), "1c"; got != want {
		t.Errorf("nix-env sees %q, want %q", got, want)
	}
	in.waitHTTP(name, "one\n")
	if got := in.label(name); got != "one" {
		t.Errorf("label after the failures = %q", got)
	}
	if i := in.info(name); i.Pid != before.Pid || i.State != "running" {
		t.Errorf("the failures restarted or stopped the container: %+v", i)
	}
	// An update killed while Nix builds changes nothing either.
	in.killDuringBuild(append([]string{"update", name, "-c", `{ system.fixture.buildDelay = 30; system.fixture.label = "` + name + `-killed"; }`}, nixArgs...))
	in.builderEnds(name + "-killed")
	if got, want := in.numbers(name), "1cr"; got != want {
		t.Errorf("generations after the killed update = %q, want %q", got, want)
	}
	// The recorded source is still the good one.
	if r := in.run("update", name); r.code != 0 || !strings.Contains(r.stderr, "no change") {
		t.Errorf("update from the recorded source after the failures: %s", r)
	}
}

// TestDeleteGenerations deletes with each of nix-env's forms and compares
// the selection with what nix-env itself would delete.
func TestDeleteGenerations(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("del")
	in.create(name, labelled("g1"))
	for i := 2; i <= 6; i++ {
		in.must("update", name, "-c", labelled(fmt.Sprintf("g%d", i)))
	}
	// Age the generations: 1 is 40 days old, 2 35, 3 20, 4 10, 5 and 6 new.
	now := time.Now()
	for gen, days := range map[int]int{1: 40, 2: 35, 3: 20, 4: 10} {
		link := filepath.Join(nix.ProfilesDir, name, fmt.Sprintf("system-%d-link", gen))
		tv := unix.NsecToTimeval(now.Add(-time.Duration(days) * 24 * time.Hour).UnixNano())
		if err := unix.Lutimes(link, []unix.Timeval{tv, tv}); err != nil {
			t.Fatal(err)
		}
	}
	in.must("switch-generation", name, "5") // 6 is newer than the current one
	in.must("start", name)

	dryRun := func(form ...string) string {
		args := append([]string{"-p", filepath.Join(nix.ProfilesDir, name, "system"), "--dry-run", "--delete-generations"}, form...)
		out, _ := exec.Command("nix-env", args...).CombinedOutput()
		var gens []int
		for _, m := range regexp.MustCompile(`remov\w* (?:profile )?(?:version|generation) (\d+)`).FindAllStringSubmatch(string(out), -1) {
			n, _ := strconv.Atoi(m[1])
			gens = append(gens, n)
		}
		sort.Ints(gens)
		return fmt.Sprint(gens)
	}
	deleted := func(form ...string) string {
		var out struct{ Deleted []int }
		if err := json.Unmarshal([]byte(in.must(append([]string{"delete-generations", "--json", name}, form...)...)), &out); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(out.Deleted)
	}

	for _, form := range []string{"30d", "+3"} {
		want := dryRun(form)
		if got := deleted(form); got != want {
			t.Errorf("delete-generations %s deleted %s; nix-env would delete %s", form, got, want)
		}
	}
	if got, want := in.numbers(name), "3 4 5cr 6"; got != want {
		t.Errorf("after 30d and +3: %q, want %q", got, want)
	}
	if r := in.run("delete-generations", name, "5"); r.code != 1 || !strings.Contains(r.stderr, "generation 5 is the current one") {
		t.Errorf("deleting the current generation: %s", r)
	}
	// A running generation that is no longer current (here: the profile
	// switched behind nixcell's back, as after an interrupted update) is
	// kept too, though nix-env would delete it.
	if out, err := exec.Command("nix-env", "-p", filepath.Join(nix.ProfilesDir, name, "system"), "--switch-generation", "4").CombinedOutput(); err != nil {
		t.Fatalf("nix-env --switch-generation: %v\n%s", err, out)
	}
	if got, want := in.numbers(name), "3 4c 5r 6"; got != want {
		t.Fatalf("after switching the profile: %q, want %q", got, want)
	}
	if r := in.run("delete-generations", name, "5"); r.code != 1 || !strings.Contains(r.stderr, "generation 5 is running") {
		t.Errorf("deleting the running generation: %s", r)
	}
	if got := deleted("old"); got != "[3 6]" {
		t.Errorf("delete-generations old deleted %s, want [3 6]", got)
	}
	if got, want := in.numbers(name), "4c 5r"; got != want {
		t.Errorf("after old: %q, want %q", got, want)
	}
	// Switching to the current generation applies it to the running
	// container, which ran another.
	if r := in.run("switch-generation", name, "4"); r.code != 0 || !strings.Contains(r.stderr, "switched in place") {
		t.Errorf("switch-generation with the running generation behind: %s", r)
	}
	if got, want := in.numbers(name), "4cr 5"; got != want {
		t.Errorf("after switch-generation: %q, want %q", got, want)
	}
	if r := in.run("delete-generations", name, "soon"); r.code != 1 || !strings.Contains(r.stderr, `"soon" is not a generation number, old, +N or Nd`) {
		t.Errorf("bad form: %s", r)
	}
}

// TestFlake creates and updates a container from a flake's
// nixosConfigurations output.
func TestFlake(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("flk")
	dir := t.TempDir()
	writeFlake := func(label string) {
		flake := fmt.Sprintf(`{
  inputs.nixpkgs.url = "path:%s";
  outputs = { self, nixpkgs }: {
    nixosConfigurations.%s = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [ ({ ... }: { boot.isContainer = true; networking.hostName = "%s"; services.httpd.enable = true;
        services.httpd.text = "%s\n"; system.fixture.label = "%s"; }) ];
    };
  };
}
`, testutil.FixtureNixpkgs(), name, name, label, label)
		if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFlake("flake-one")
	in.must("create", name, "--flake", "path:"+dir+"#"+name)
	in.must("start", name)
	in.waitHTTP(name, "flake-one\n")
	writeFlake("flake-two")
	if r := in.run("update", name); r.code != 0 || !strings.Contains(r.stderr, "new generation 2, switched in place") {
		t.Fatalf("update from the flake: %s", r)
	}
	in.waitHTTP(name, "flake-two\n")
	if r := in.run("create", testutil.Name("flk"), "--flake", "path:"+dir+"#nosuch"); r.code != 1 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("missing flake output: %s", r)
	}
}
