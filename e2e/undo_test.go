package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

// TestFailedUpdateReleasesClaims: an update whose build fails gives back
// the host ports and addresses it claimed before the build, so another
// container may take them (issue 10, item 4).
func TestFailedUpdateReleasesClaims(t *testing.T) {
	in := newInstance(t)
	port := 21000 + freeSubnet(t, func(k int) []string { return nil })
	a, b := testutil.Name("upda"), testutil.Name("updb")
	in.create(a, `{ configuration = { }; }`)
	in.must("start", a)
	claims := in.networkClaims()
	r := in.run(append([]string{"update", a, "-c", fmt.Sprintf(`{
  network.enableNat = true;
  network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ];
  configuration = { system.fixture.failBuild = true; };
}`, port)}, nixArgs...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "build failed on purpose") {
		t.Fatalf("update with a failing build: %s", r)
	}
	if got := in.networkClaims(); got != claims {
		t.Errorf("the failed update changed the claims:\nbefore %s\nafter  %s", claims, got)
	}
	in.create(b, fmt.Sprintf(`{
  network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ];
  configuration = { };
}`, port))
}

// networkClaims is what the instance's network state holds for its
// containers: addresses and forwarded ports.
func (in *instance) networkClaims() string {
	in.t.Helper()
	var st struct {
		Addresses json.RawMessage `json:"addresses"`
		Ports     json.RawMessage `json:"ports"`
	}
	data, err := os.ReadFile(in.store.NetworkPath())
	if err != nil {
		in.t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		in.t.Fatal(err)
	}
	return string(st.Addresses) + " " + string(st.Ports)
}

// failpointBin builds nixcell with the failpoints tag once.
var failpointBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "nixcell-e2e-failpoints-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "nixcell")
	build := exec.Command("go", "build", "-tags", "seccomp failpoints", "-o", out, "./cmd/nixcell")
	build.Dir = testutil.ProjectRoot()
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, msg)
	}
	return out, nil
})

// steps runs nixcell args once with a failpoint trace and returns the
// steps it passed, in order.
func (in *instance) steps(args ...string) []string {
	in.t.Helper()
	trace := filepath.Join(in.t.TempDir(), "trace")
	c := in.cmd(args...)
	c.Env = append(c.Env, "NIXCELL_FAILPOINT_TRACE="+trace)
	if out, err := c.CombinedOutput(); err != nil {
		in.t.Fatalf("nixcell %v: %v\n%s", args, err, out)
	}
	data, _ := os.ReadFile(trace)
	return strings.Fields(string(data))
}

// failAt runs nixcell args with the failpoint step set to fail (how
// "error") or to kill the process (how "kill").
func (in *instance) failAt(step, how string, args ...string) result {
	in.t.Helper()
	point := step
	if how == "kill" {
		point += ":kill"
	}
	c := in.cmd(args...)
	c.Env = append(c.Env, "NIXCELL_FAILPOINT="+point)
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		if ee.ProcessState.String() == "signal: killed" {
			code = -9
		}
	}
	return result{out.String(), errb.String(), code}
}

// hostTraces lists what of the container is on the host, by kind, for the
// checks after a failure: its record, run record, profile, ID range,
// addresses, forwarded ports, rules, interfaces and the instance's leaks.
func (in *instance) hostTraces(name string) map[string]bool {
	in.t.Helper()
	has := map[string]bool{}
	_, err := os.Stat(in.store.Dir(name))
	has["record"] = err == nil
	runs, _ := os.ReadFile(in.store.RunsPath())
	has["run"] = strings.Contains(string(runs), `"`+name+`"`)
	_, err = os.Lstat(filepath.Join(nix.ProfilesDir, name))
	has["profile"] = err == nil
	_, has["ids"], _ = in.ranges().Lookup(name)
	claims := in.networkClaims()
	has["addresses"] = strings.Contains(claims, `"`+name+`"`)
	rules, _ := exec.Command("nft", "list", "table", "inet", "nixcell-"+in.store.ID).Output()
	has["rules"] = strings.Contains(string(rules), `"`+name+`"`)
	_, err = os.Stat(filepath.Join(in.store.Run, "host", name))
	has["host-dir"] = err == nil
	_, err = os.Stat(filepath.Join(in.store.RuntimeRoot(), name))
	has["runtime"] = err == nil
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range append(hierarchies, nil) {
		p := "/sys/fs/cgroup"
		if h != nil {
			p = filepath.Join(p, h.Name())
		}
		if _, err := os.Stat(filepath.Join(p, in.store.CgroupPath(name))); err == nil {
			has["cgroup"] = true
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	has["mounts"] = strings.Contains(string(mounts), "/"+name)
	return has
}

// expectTraces fails the test unless exactly the kinds in want are on the
// host for name.
func (in *instance) expectTraces(when, name string, want ...string) {
	in.t.Helper()
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w] = true
	}
	for kind, present := range in.hostTraces(name) {
		if present != wanted[kind] {
			in.t.Errorf("%s: %s of %s present = %v, want %v", when, kind, name, present, wanted[kind])
		}
	}
}

// TestFailpoints walks every named step of create, start, update,
// rollback and destroy, failing the command there and, separately,
// killing it there. After each, nothing is left claimed, mounted or
// written beyond what the next command finishes or undoes: a failed
// create leaves no trace; a failed start leaves the container stopped
// with no run record, rule or interface; a failed update or rollback
// leaves the generations, claims and limits as they were; a killed
// command's leftovers are finished off by the next one.
func TestFailpoints(t *testing.T) {
	fp, err := failpointBin()
	if err != nil {
		t.Fatalf("building nixcell with failpoints: %v", err)
	}
	in := newInstance(t)
	in.bin = fp
	config := func(label string, port int) string {
		return fmt.Sprintf(`{
  network.enableNat = true;
  network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ];
  limits.pids = %d;
  configuration = { system.fixture.label = "%s"; services.httpd.enable = true; };
}`, port, 500+port%100, label)
	}
	// A host port of its own for every container and update: a window of
	// 100 per test run (k is at most 250), clear of the other tests' 21000s.
	first := 22000 + 100*freeSubnet(t, func(int) []string { return nil })
	port := first
	nextPort := func() int {
		if port++; port >= first+100 {
			t.Fatalf("TestFailpoints used up its 100 host ports")
		}
		return port
	}
	create := func(name string) []string {
		return append([]string{"create", name, nixFile(t, "c.nix", config("one", nextPort()))}, nixArgs...)
	}
	update := func(name string) []string {
		return append([]string{"update", name, nixFile(t, "u.nix", config("two", nextPort()))}, nixArgs...)
	}

	t.Run("create", func(t *testing.T) {
		probe := testutil.Name("fp")
		steps := in.steps(create(probe)...)
		in.must("destroy", probe)
		if len(steps) < 4 {
			t.Fatalf("create passed only the steps %v", steps)
		}
		for _, step := range steps {
			for _, how := range []string{"error", "kill"} {
				name := testutil.Name("fp")
				r := in.failAt(step, how, create(name)...)
				if how == "error" {
					if r.code != 1 || !strings.Contains(r.stderr, "failpoint "+step) {
						t.Errorf("create failing at %s: %s", step, r)
					}
					in.expectTraces("create failed at "+step, name)
					continue
				}
				if r.code != -9 {
					t.Errorf("create killed at %s: %s", step, r)
				}
				// What a killed create left, the next create finishes off.
				in.must(create(name)...)
				in.must("destroy", name)
				in.expectTraces("create killed at "+step+", created and destroyed again", name)
			}
		}
	})

	name := testutil.Name("fp")
	in.must(create(name)...)
	t.Run("start", func(t *testing.T) {
		steps := in.steps("start", name)
		in.must("stop", name)
		if len(steps) < 3 {
			t.Fatalf("start passed only the steps %v", steps)
		}
		for _, step := range steps {
			for _, how := range []string{"error", "kill"} {
				r := in.failAt(step, how, "start", name)
				if how == "error" && (r.code != 1 || !strings.Contains(r.stderr, "failpoint "+step)) {
					t.Errorf("start failing at %s: %s", step, r)
				}
				if how == "error" {
					if st := in.info(name).State; st != "stopped" {
						t.Errorf("start failing at %s: the container is %s", step, st)
					}
					in.expectTraces("start failed at "+step, name, "record", "profile", "ids", "addresses")
				}
				// A start killed after its init ran leaves it running; a
				// start killed before leaves a run record and rules that
				// the next start (or any network change) drops.
				if how == "kill" && in.info(name).State == "running" {
					in.must("stop", name)
				}
				in.must("start", name)
				in.waitHTTP(name, "hello from "+name+"\n")
				in.must("stop", name)
				in.expectTraces("start "+how+" at "+step+", then start and stop", name, "record", "profile", "ids", "addresses")
			}
		}
	})

	in.must("start", name)
	t.Run("update", func(t *testing.T) {
		steps := in.steps(update(name)...)
		in.must("rollback", name)
		in.must("delete-generations", name, "old")
		in.must(append([]string{"update", name, nixFile(t, "one.nix", config("one", nextPort()))}, nixArgs...)...)
		if len(steps) < 4 {
			t.Fatalf("update passed only the steps %v", steps)
		}
		before, claims, was, kernel := in.numbers(name), in.networkClaims(), in.info(name), in.kernelLimits(name)
		for _, step := range steps {
			r := in.failAt(step, "error", update(name)...)
			if r.code != 1 || !strings.Contains(r.stderr, "failpoint "+step) {
				t.Errorf("update failing at %s: %s", step, r)
			}
			if got := in.numbers(name); got != before {
				t.Errorf("update failed at %s: generations %q, were %q", step, got, before)
			}
			if got := in.networkClaims(); got != claims {
				t.Errorf("update failed at %s: claims\n%s\nwere\n%s", step, got, claims)
			}
			if got := in.info(name); got.State != "running" || got.Pid != was.Pid || in.label(name) != "one" {
				t.Errorf("update failed at %s: %+v, label %q; was %+v, one", step, got, in.label(name), was)
			}
			if got := in.kernelLimits(name); got != kernel {
				t.Errorf("update failed at %s: the kernel's limits are %+v, were %+v", step, got, kernel)
			}
			in.expectTraces("update failed at "+step, name, "record", "run", "profile", "ids", "addresses", "rules", "host-dir", "runtime", "cgroup")
		}
	})

	t.Run("destroy", func(t *testing.T) {
		victim := testutil.Name("fp")
		in.must(create(victim)...)
		in.must("start", victim)
		steps := in.steps("destroy", victim)
		if len(steps) < 5 {
			t.Fatalf("destroy passed only the steps %v", steps)
		}
		for _, step := range steps {
			for _, how := range []string{"error", "kill"} {
				victim := testutil.Name("fp")
				in.must(create(victim)...)
				in.must("start", victim)
				in.failAt(step, how, "destroy", victim)
				// Whatever is left, the next destroy removes.
				in.must("destroy", victim)
				in.expectTraces("destroy "+how+" at "+step+", then destroy", victim)
			}
		}
	})
}
