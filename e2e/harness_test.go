package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/testutil"
)

// bin is the nixcell binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	code := func() int {
		if p := os.Getenv("NIXCELL_BIN"); p != "" {
			bin = p
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "nixcell-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "nixcell")
		build := exec.Command("go", "build", "-tags", "seccomp", "-o", bin, "./cmd/nixcell")
		build.Dir = testutil.ProjectRoot()
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building nixcell:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// instance is one isolated nixcell state directory.
type instance struct {
	t     *testing.T
	bin   string // the nixcell binary it runs
	dir   string
	store state.Store
	env   []string // added to every nixcell command's environment
}

// newInstance gives the test its own state directory and, when the test
// ends, destroys whatever containers are left in it and checks that
// nothing of them remains on the host.
func newInstance(t *testing.T) *instance {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "nix-build", "nix-env", "nix-instantiate")
	in := &instance{t: t, dir: testutil.StateDir(t), bin: bin}
	// Subnets of its own, so its bridges never overlap another instance's
	// or anything else the host routes.
	k := freeSubnet(t, func(k int) []string {
		return []string{fmt.Sprintf("10.240.%d.0/24", k), fmt.Sprintf("10.241.%d.0/24", k)}
	})
	in.env = []string{fmt.Sprintf("NIXCELL_HOSTONLY_SUBNET=10.240.%d.0/24", k), fmt.Sprintf("NIXCELL_NAT_SUBNET=10.241.%d.0/24", k)}
	var err error
	if in.store, err = state.New(in.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		names, _ := in.store.Names()
		for _, n := range names {
			if r := in.run("destroy", "--timeout", "5s", n); r.code != 0 {
				t.Errorf("cleanup: destroy %s: %s", n, r.stderr)
			}
		}
		for _, leak := range in.leaks() {
			t.Errorf("leaked after the test: %s", leak)
		}
		// The registry of ID ranges is the host's: what the instance
		// still holds there goes too, or it would be held for ever.
		ranges, err := in.ranges().All()
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for n, r := range ranges {
			t.Errorf("leaked after the test: ID range %v of %s", r, n)
			_ = in.ranges().Release(context.Background(), n)
		}
		// Whatever a failed test left of the instance's network goes too,
		// so it cannot disturb the tests after it.
		for _, fam := range []string{"inet", "bridge"} {
			if exec.Command("nft", "list", "table", fam, "nixcell-"+in.store.ID).Run() == nil {
				t.Errorf("leaked after the test: nft table %s nixcell-%s", fam, in.store.ID)
				_ = exec.Command("nft", "delete", "table", fam, "nixcell-"+in.store.ID).Run()
			}
		}
		for _, br := range []string{"nch-" + in.store.ID, "ncn-" + in.store.ID} {
			if exec.Command("ip", "link", "show", br).Run() == nil {
				t.Errorf("leaked after the test: bridge %s", br)
				_ = exec.Command("ip", "link", "del", br).Run()
			}
		}
		// Nothing of a destroyed instance stays in /run; its name server
		// ends within a moment of its last container (issue 13, item 7).
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := os.Lstat(in.store.Run)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				left, _ := filepath.Glob(filepath.Join(in.store.Run, "*"))
				t.Errorf("leaked after the test: run directory %s holding %v", in.store.Run, left)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = os.RemoveAll(in.store.Run)
	})
	return in
}

// ranges is the instance's part of the host-wide registry of ID ranges,
// the one every nixcell on the host shares.
func (in *instance) ranges() *idmap.Allocator {
	return idmap.New(idmap.Config{Instance: in.store.Root})
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// cmd prepares a nixcell command in this instance.
func (in *instance) cmd(args ...string) *exec.Cmd {
	c := exec.Command(in.bin, args...)
	c.Env = append(append(os.Environ(), "NIXCELL_STATE_DIR="+in.dir), in.env...)
	return c
}

// runIn runs nixcell with stdin.
func (in *instance) runIn(stdin string, args ...string) result {
	in.t.Helper()
	c := in.cmd(args...)
	var out, errb bytes.Buffer
	c.Stdin = strings.NewReader(stdin)
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		in.t.Fatalf("running nixcell %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func (in *instance) run(args ...string) result {
	in.t.Helper()
	return in.runIn("", args...)
}

// must runs nixcell and fails the test unless it exits 0; it returns stdout.
func (in *instance) must(args ...string) string {
	in.t.Helper()
	r := in.run(args...)
	if r.code != 0 {
		in.t.Fatalf("nixcell %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// exec runs a command in the container and returns its stdout, failing the
// test on a non-zero status.
func (in *instance) exec(name string, args ...string) string {
	in.t.Helper()
	return in.must(append([]string{"exec", name, "--"}, args...)...)
}

type info struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int    `json:"generation"`
	System     string `json:"system"`
	Pid        int    `json:"pid"`
	IDs        *struct {
		Start uint32 `json:"start"`
		Size  uint32 `json:"size"`
	} `json:"ids"`
}

func (in *instance) info(name string) info {
	in.t.Helper()
	r := in.run("state", "--json", name)
	var i info
	if err := json.Unmarshal([]byte(r.stdout), &i); err != nil {
		in.t.Fatalf("state --json %s: %v (%s)", name, err, r)
	}
	return i
}

// leaks lists what the instance's containers left on the host: runtime
// state, host directories, cgroups and mounts under its directories.
func (in *instance) leaks() []string {
	var leaks []string
	if entries, _ := os.ReadDir(in.store.RuntimeRoot()); len(entries) > 0 {
		for _, e := range entries {
			leaks = append(leaks, "runtime state "+filepath.Join(in.store.RuntimeRoot(), e.Name()))
		}
	}
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range append(hierarchies, nil) {
		p := "/sys/fs/cgroup"
		if h != nil {
			p = filepath.Join(p, h.Name())
		}
		if _, err := os.Stat(filepath.Join(p, in.store.CgroupParent)); err == nil {
			leaks = append(leaks, "cgroup "+filepath.Join(p, in.store.CgroupParent))
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(in.store.Run, "host")); len(entries) > 0 {
		for _, e := range entries {
			leaks = append(leaks, "host directory "+filepath.Join(in.store.Run, "host", e.Name()))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, in.dir) || strings.Contains(line, in.store.Run+"/") {
			leaks = append(leaks, "mount "+line)
		}
	}
	return leaks
}

// nixFile writes a Nix file for the test and returns its path.
func nixFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// nixArgs points every build at the stand-in nixpkgs.
var nixArgs = []string{"-n", testutil.NixArgs()}

// create creates a container from a configuration file's content.
func (in *instance) create(name, config string) {
	in.t.Helper()
	in.must(append([]string{"create", name, nixFile(in.t, name+".nix", config)}, nixArgs...)...)
}

// systemOnce builds one fixture system per configuration for tests that only
// need some system (--system), so they do not pay for a build each.
var systems sync.Map

func prebuilt(t testing.TB, config string) string {
	t.Helper()
	if p, ok := systems.Load(config); ok {
		return p.(string)
	}
	expr := fmt.Sprintf(`(import <nixpkgs/nixos> { configuration = { lib, ... }: { imports = [ (%s) ]; networking.hostName = lib.mkDefault "prebuilt"; _module.args = { name = "prebuilt"; ip = ""; }; }; }).system`, config)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nix-build", "--no-out-link", "-I", "nixpkgs="+testutil.FixtureNixpkgs(), "-E", expr).Output()
	if err != nil {
		t.Fatalf("building a fixture system: %v", err)
	}
	p := strings.TrimSpace(string(out))
	systems.Store(config, p)
	return p
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readRoot reads a file of the container's root from the host.
func (in *instance) readRoot(name, path string) string {
	data, _ := os.ReadFile(filepath.Join(in.store.RootFS(name), path))
	return string(data)
}

// waitHTTP waits until the container's web server answers want on its
// loopback: services start after the init does.
func (in *instance) waitHTTP(name, want string) {
	in.t.Helper()
	var last result
	waitFor(in.t, 20*time.Second, "httpd in "+name+" to answer", func() bool {
		last = in.run("exec", name, "--", "wget", "-qO-", "http://127.0.0.1/")
		return last.code == 0 && last.stdout == want
	})
}

// freeSubnet picks k in [1, 250] such that none of the IPv4 subnets
// subnets(k) overlaps a route the host has.
func freeSubnet(t testing.TB, subnets func(k int) []string) int {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	var routed []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "local" || dst == "broadcast" {
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil && p.Bits() > 0 {
			routed = append(routed, p)
		}
	}
	for tries := 0; tries < 1000; tries++ {
		k := 1 + mathrand.IntN(250)
		free := true
		for _, s := range subnets(k) {
			p := netip.MustParsePrefix(s)
			for _, r := range routed {
				free = free && !p.Overlaps(r)
			}
		}
		if free {
			return k
		}
	}
	t.Fatal("no free test subnet")
	return 0
}
