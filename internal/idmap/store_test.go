package idmap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
)

// newTest returns an Allocator of an instance whose state directory is in
// a fresh directory, with a registry of its own, and writes the subid files
// given (nil: no file).
func newTest(t *testing.T, subuid, subgid []string) (*Allocator, Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Instance:     filepath.Join(dir, "instance"),
		RegistryPath: filepath.Join(dir, "registry", "ranges.json"),
		SubUIDPath:   filepath.Join(dir, "subuid"),
		SubGIDPath:   filepath.Join(dir, "subgid"),
	}
	if err := os.Mkdir(cfg.Instance, 0o700); err != nil {
		t.Fatal(err)
	}
	for path, lines := range map[string][]string{cfg.SubUIDPath: subuid, cfg.SubGIDPath: subgid} {
		if lines == nil {
			continue
		}
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return New(cfg), cfg
}

// another returns the Config of another instance sharing cfg's registry
// and subid files, its state directory created.
func another(t *testing.T, cfg Config, name string) Config {
	t.Helper()
	cfg.Instance = filepath.Join(filepath.Dir(cfg.Instance), name)
	cfg.LegacyPath = ""
	if err := os.Mkdir(cfg.Instance, 0o700); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func allocate(t *testing.T, a *Allocator, name string) Range {
	t.Helper()
	r, err := a.Allocate(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func overlap(a, b Range) bool {
	return a.End() > uint64(b.Start) && b.End() > uint64(a.Start)
}

func TestAllocateDefaultPool(t *testing.T) {
	a, cfg := newTest(t, nil, nil)
	web := allocate(t, a, "web")
	if want := (Range{1 << 20, RangeSize}); web != want {
		t.Fatalf("first range = %v, want %v", web, want)
	}
	db := allocate(t, a, "db")
	if want := (Range{1<<20 + RangeSize, RangeSize}); db != want {
		t.Fatalf("second range = %v, want %v", db, want)
	}

	// Idempotent, and persistent across Allocators.
	again := New(cfg)
	if r := allocate(t, again, "web"); r != web {
		t.Fatalf("allocating web again = %v, want %v", r, web)
	}
	r, ok, err := again.Lookup("db")
	if err != nil || !ok || r != db {
		t.Fatalf("Lookup(db) = %v, %v, %v; want %v, true, nil", r, ok, err, db)
	}
	if _, ok, err := again.Lookup("none"); ok || err != nil {
		t.Fatalf("Lookup(none) = %v, %v; want false, nil", ok, err)
	}
	all, err := again.All()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(all) != fmt.Sprint(map[string]Range{"web": web, "db": db}) {
		t.Fatalf("All() = %v", all)
	}

	raw, err := os.ReadFile(cfg.RegistryPath)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "instances": {
    "` + cfg.Instance + `": {
      "ranges": {
        "db": {
          "start": 1114112,
          "size": 65536
        },
        "web": {
          "start": 1048576,
          "size": 65536
        }
      }
    }
  }
}
`
	if string(raw) != want {
		t.Fatalf("registry:\n%s\nwant:\n%s", raw, want)
	}
	if fi, err := os.Stat(filepath.Dir(cfg.RegistryPath)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("registry directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
}

func TestEmptyState(t *testing.T) {
	a, _ := newTest(t, nil, nil)
	all, err := a.All()
	if err != nil || all == nil || len(all) != 0 {
		t.Fatalf("All() on no state = %v, %v; want an empty map", all, err)
	}
	if err := a.Release(context.Background(), "web"); err != nil {
		t.Fatalf("Release of an unknown name: %v", err)
	}
	if _, ok, err := a.Lookup("web"); ok || err != nil {
		t.Fatalf("Lookup(web) = %v, %v", ok, err)
	}
	if _, err := a.Allocate(context.Background(), ""); err == nil {
		t.Fatal("allocating for an empty name succeeded")
	}
}

func TestReleaseThenReuse(t *testing.T) {
	a, _ := newTest(t, nil, nil)
	ctx := context.Background()
	r1, r2, r3 := allocate(t, a, "one"), allocate(t, a, "two"), allocate(t, a, "three")
	if err := a.Release(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "two"); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if _, ok, _ := a.Lookup("two"); ok {
		t.Fatal("two still has a range after Release")
	}
	if r := allocate(t, a, "four"); r != r2 {
		t.Fatalf("after releasing %v, got %v; want the freed range", r2, r)
	}
	if r := allocate(t, a, "five"); overlap(r, r1) || overlap(r, r3) || r.Start <= r3.Start {
		t.Fatalf("next range %v is not after %v and %v", r, r1, r3)
	}
}

// holding is one container's range as an Allocator returned it.
type holding struct {
	instance, name string
	r              Range
}

// checkHostWide checks that the ranges got are distinct, come first-free
// from the default pool (together they fill its first blocks), and are what
// each instance's All reports, and all it reports.
func checkHostWide(t *testing.T, got []holding, cfgs ...Config) {
	t.Helper()
	byInstance := map[string]map[string]Range{}
	for _, h := range got {
		if byInstance[h.instance] == nil {
			byInstance[h.instance] = map[string]Range{}
		}
		if r, dup := byInstance[h.instance][h.name]; dup && r != h.r {
			t.Errorf("%s of %s got %v and %v", h.name, h.instance, r, h.r)
		}
		byInstance[h.instance][h.name] = h.r
	}
	var distinct []holding
	for dir, ranges := range byInstance {
		for name, r := range ranges {
			distinct = append(distinct, holding{dir, name, r})
		}
	}
	starts := make([]uint32, len(distinct))
	for i, h := range distinct {
		if h.r.Size != RangeSize || h.r.Start%RangeSize != 0 || h.r.Start < 1<<20 {
			t.Errorf("%s of %s got %v", h.name, h.instance, h.r)
		}
		for _, o := range distinct[:i] {
			if overlap(h.r, o.r) {
				t.Errorf("%s of %s got %v, overlapping %v of %s of %s", h.name, h.instance, h.r, o.r, o.name, o.instance)
			}
		}
		starts[i] = h.r.Start
	}
	slices.Sort(starts)
	for i, s := range starts {
		if want := uint32(1<<20 + i*RangeSize); s != want {
			t.Fatalf("sorted starts %v are not the first %d blocks", starts, len(starts))
		}
	}
	for _, cfg := range cfgs {
		all, err := New(cfg).All()
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(all) != fmt.Sprint(byInstance[cfg.Instance]) {
			t.Errorf("All() of %s = %v, want %v", cfg.Instance, all, byInstance[cfg.Instance])
		}
	}
}

// TestAllocateConcurrent: two instances allocate for the same names at
// once, each call with an Allocator of its own, as separate nixcell
// processes would.
func TestAllocateConcurrent(t *testing.T) {
	_, a := newTest(t, nil, nil)
	b := another(t, a, "b")
	const n = 10
	got := make([]holding, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n {
		wg.Go(func() {
			cfg, name := a, fmt.Sprintf("c%d", i/2)
			if i%2 == 1 {
				cfg = b
			}
			r, err := New(cfg).Allocate(context.Background(), name)
			if err != nil {
				t.Error(err)
			}
			got[i] = holding{cfg.Instance, name, r}
		})
	}
	wg.Wait()
	checkHostWide(t, got, a, b)
}

// The helper process: the test binary re-executed with envHelper set to a
// JSON helperJob allocates its names one after the other and prints what
// it got, one "NAME START SIZE" line each.
const envHelper = "NIXCELL_IDMAP_HELPER"

type helperJob struct {
	Config Config
	Names  []string
}

func TestMain(m *testing.M) {
	if job := os.Getenv(envHelper); job != "" {
		if err := helperMain(job); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperMain(job string) error {
	var j helperJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		return err
	}
	a := New(j.Config)
	for _, name := range j.Names {
		r, err := a.Allocate(context.Background(), name)
		if err != nil {
			return err
		}
		fmt.Println(name, r.Start, r.Size)
	}
	return nil
}

// TestAllocateConcurrentProcesses: processes of two instances allocate at
// once; those of one instance ask for some names in common, and must get
// one range per name.
func TestAllocateConcurrentProcesses(t *testing.T) {
	_, a := newTest(t, nil, nil)
	b := another(t, a, "b")
	type proc struct {
		cmd *exec.Cmd
		out bytes.Buffer
		cfg Config
	}
	var procs []*proc
	for k := range 6 {
		cfg := []Config{a, b}[k%2]
		// Processes 0 and 2 of an instance share names w0..w4, process 4
		// has its own.
		names := make([]string, 5)
		for i := range names {
			names[i] = fmt.Sprintf("w%d", i+min(k/4, 1)*5)
		}
		job, err := json.Marshal(helperJob{cfg, names})
		if err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: exec.Command(os.Args[0], "-test.run=^$"), cfg: cfg}
		// GORACE: a race-enabled binary otherwise sleeps a second at exit.
		p.cmd.Env = append(os.Environ(), envHelper+"="+string(job), "GORACE=atexit_sleep_ms=0")
		p.cmd.Stdout, p.cmd.Stderr = &p.out, os.Stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	var got []holding
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("helper of %s: %v", p.cfg.Instance, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(p.out.String()), "\n") {
			var h holding
			if _, err := fmt.Sscan(line, &h.name, &h.r.Start, &h.r.Size); err != nil {
				t.Fatalf("helper printed %q: %v", line, err)
			}
			h.instance = p.cfg.Instance
			got = append(got, h)
		}
	}
	if len(got) != 30 {
		t.Fatalf("helpers printed %d ranges, want 30", len(got))
	}
	checkHostWide(t, got, a, b)
	if all, _ := New(a).All(); len(all) != 10 {
		t.Errorf("instance a holds %d ranges, want 10: %v", len(all), all)
	}
}

// TestTwoInstances: containers of the same name in two instances hold
// different ranges; each instance sees and releases only its own.
func TestTwoInstances(t *testing.T) {
	ctx := context.Background()
	_, cfgA := newTest(t, nil, nil)
	cfgB := another(t, cfgA, "b")
	a, b := New(cfgA), New(cfgB)
	webA, webB := allocate(t, a, "web"), allocate(t, b, "web")
	dbB := allocate(t, b, "db")
	if overlap(webA, webB) || overlap(webA, dbB) || overlap(webB, dbB) {
		t.Fatalf("ranges overlap: a/web %v, b/web %v, b/db %v", webA, webB, dbB)
	}
	if r := allocate(t, b, "web"); r != webB {
		t.Fatalf("b/web again = %v, want %v", r, webB)
	}
	if _, ok, err := a.Lookup("db"); ok || err != nil {
		t.Fatalf("a sees b's db: %v, %v", ok, err)
	}
	if all, err := a.All(); err != nil || fmt.Sprint(all) != fmt.Sprint(map[string]Range{"web": webA}) {
		t.Fatalf("a.All() = %v, %v", all, err)
	}
	if err := a.Release(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if r, ok, err := b.Lookup("db"); !ok || err != nil || r != dbB {
		t.Fatalf("b/db after a released db: %v, %v, %v", r, ok, err)
	}
	if err := b.Release(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if r, ok, err := a.Lookup("web"); !ok || err != nil || r != webA {
		t.Fatalf("a/web after b released web: %v, %v, %v", r, ok, err)
	}
	if r := allocate(t, a, "other"); r != webB {
		t.Fatalf("a's next range = %v, want b's freed %v", r, webB)
	}
	// An instance that holds nothing leaves no trace in the registry.
	if err := b.Release(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(cfgA.RegistryPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), cfgB.Instance) {
		t.Fatalf("registry still names b:\n%s", raw)
	}
}

func TestInstanceNotAbsolute(t *testing.T) {
	_, cfg := newTest(t, nil, nil)
	for _, dir := range []string{"", "relative", cfg.Instance + "/"} {
		cfg.Instance = dir
		a := New(cfg)
		if _, err := a.Allocate(context.Background(), "web"); err == nil || !strings.Contains(err.Error(), "absolute clean path") {
			t.Errorf("Allocate in instance %q: %v", dir, err)
		}
		if _, err := a.All(); err == nil {
			t.Errorf("All in instance %q succeeded", dir)
		}
	}
}

func TestDelegationHonoured(t *testing.T) {
	a, _ := newTest(t,
		[]string{"root:100000:65536", "nixcell:165536:196608"},
		[]string{"root:100000:65536", "nixcell:165536:131072", "nixcell:296608:65536"})
	delegated := Range{165536, 196608}
	var got []Range
	for _, name := range []string{"a", "b", "c"} {
		r := allocate(t, a, name)
		if r.Start < delegated.Start || r.End() > delegated.End() {
			t.Fatalf("%s got %v, outside the delegated %v", name, r, delegated)
		}
		got = append(got, r)
	}
	want := []Range{{165536, RangeSize}, {231072, RangeSize}, {296608, RangeSize}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	_, err := a.Allocate(context.Background(), "d")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocating past the delegation: %v, want ErrExhausted", err)
	}
}

func TestOtherUsersAvoided(t *testing.T) {
	// IDs delegated to others in either file, inside the default pool.
	a, _ := newTest(t,
		[]string{"root:100000:65536", "alice:1048576:65536"},
		[]string{"bob:1114112:100000", "1000:1310720:1"})
	want := []Range{{1245184, RangeSize}, {1376256, RangeSize}}
	for i, name := range []string{"a", "b"} {
		if r := allocate(t, a, name); r != want[i] {
			t.Fatalf("%s got %v, want %v", name, r, want[i])
		}
	}
}

func TestDelegationInOneFileOnlyIgnored(t *testing.T) {
	a, _ := newTest(t, []string{"nixcell:100000:65536"}, []string{"root:1048576:65536"})
	if r, want := allocate(t, a, "web"), (Range{1<<20 + RangeSize, RangeSize}); r != want {
		t.Fatalf("got %v, want %v from the default pool", r, want)
	}
}

func TestExhausted(t *testing.T) {
	a, cfg := newTest(t, []string{"nixcell:1048576:131072"}, []string{"nixcell:1048576:131072"})
	ctx := context.Background()
	allocate(t, a, "a")
	b := allocate(t, a, "b")
	_, err := a.Allocate(ctx, "c")
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("third allocation: %v, want ErrExhausted", err)
	}
	for _, s := range []string{`"c"`, cfg.SubUIDPath, "1048576-1179647"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}
	if _, ok, _ := a.Lookup("c"); ok {
		t.Fatal("a failed allocation was recorded")
	}
	// Names that hold a range still get it.
	if r := allocate(t, a, "b"); r != b {
		t.Fatalf("b got %v, want %v", r, b)
	}
	if err := a.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if r := allocate(t, a, "c"); r != (Range{1048576, RangeSize}) {
		t.Fatalf("c got %v after a was released", r)
	}
}

func TestMalformedSubIDFile(t *testing.T) {
	a, cfg := newTest(t, []string{"root:100000:65536"}, []string{"root:100000:65536", "nixcell:lots"})
	_, err := a.Allocate(context.Background(), "web")
	if err == nil {
		t.Fatal("Allocate with a malformed subgid file succeeded")
	}
	if want := cfg.SubGIDPath + " line 2"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %q", err, want)
	}
	if _, err := os.Stat(cfg.RegistryPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("registry written despite the error: %v", err)
	}
}

func TestMalformedRegistry(t *testing.T) {
	a, cfg := newTest(t, nil, nil)
	if err := os.MkdirAll(filepath.Dir(cfg.RegistryPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.RegistryPath, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Allocate": func() error { _, err := a.Allocate(context.Background(), "web"); return err }(),
		"All":      func() error { _, err := a.All(); return err }(),
		"Lookup":   func() error { _, _, err := a.Lookup("web"); return err }(),
		"Release":  a.Release(context.Background(), "web"),
		"Stale":    func() error { _, err := a.Stale(); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), cfg.RegistryPath) {
			t.Errorf("%s with a broken registry: %v, want an error naming it", name, err)
		}
	}
}

func TestAllocateWaitsForLock(t *testing.T) {
	a, cfg := newTest(t, nil, nil)
	held, err := lockfile.TryLock(filepath.Join(filepath.Dir(cfg.RegistryPath), "ranges.lock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Allocate(ctx, "web"); !errors.Is(err, lockfile.ErrLocked) {
		t.Fatalf("Allocate while the lock is held: %v, want lockfile.ErrLocked", err)
	}
	if err := a.Release(ctx, "web"); !errors.Is(err, lockfile.ErrLocked) {
		t.Fatalf("Release while the lock is held: %v, want lockfile.ErrLocked", err)
	}
	if _, err := a.Reclaim(ctx); !errors.Is(err, lockfile.ErrLocked) {
		t.Fatalf("Reclaim while the lock is held: %v, want lockfile.ErrLocked", err)
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	allocate(t, a, "web")
}
