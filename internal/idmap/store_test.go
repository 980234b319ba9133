package idmap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/lockfile"
)

// newTest returns an Allocator with its files in a fresh directory, and
// writes the subid files given (nil: no file).
func newTest(t *testing.T, subuid, subgid []string) (*Allocator, Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		StatePath:  filepath.Join(dir, "state", "idmap.json"),
		LockPath:   filepath.Join(dir, "locks", "alloc.lock"),
		SubUIDPath: filepath.Join(dir, "subuid"),
		SubGIDPath: filepath.Join(dir, "subgid"),
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

	raw, err := os.ReadFile(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
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
`
	if string(raw) != want {
		t.Fatalf("state file:\n%s\nwant:\n%s", raw, want)
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

func TestAllocateConcurrent(t *testing.T) {
	_, cfg := newTest(t, nil, nil)
	const n = 20
	ranges := make([]Range, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// An Allocator each, as separate nixcell processes would have.
			r, err := New(cfg).Allocate(context.Background(), fmt.Sprintf("c%d", i))
			if err != nil {
				t.Error(err)
			}
			ranges[i] = r
		})
	}
	wg.Wait()

	for i, r := range ranges {
		if r.Size != RangeSize || r.Start%RangeSize != 0 || r.Start < 1<<20 {
			t.Errorf("c%d got %v", i, r)
		}
		for j := range i {
			if overlap(r, ranges[j]) {
				t.Errorf("c%d got %v, overlapping %v of c%d", i, r, ranges[j], j)
			}
		}
	}
	all, err := New(cfg).All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("state holds %d ranges, want %d", len(all), n)
	}
	for i, r := range ranges {
		if all[fmt.Sprintf("c%d", i)] != r {
			t.Errorf("state has %v for c%d, Allocate returned %v", all[fmt.Sprintf("c%d", i)], i, r)
		}
	}
	// Lowest free first: together they fill the first n blocks.
	starts := make([]uint32, n)
	for i, r := range ranges {
		starts[i] = r.Start
	}
	slices.Sort(starts)
	for i, s := range starts {
		if want := uint32(1<<20 + i*RangeSize); s != want {
			t.Fatalf("sorted starts %v are not the first %d blocks", starts, n)
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
	if _, err := os.Stat(cfg.StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state written despite the error: %v", err)
	}
}

func TestMalformedState(t *testing.T) {
	a, cfg := newTest(t, nil, nil)
	if err := os.MkdirAll(filepath.Dir(cfg.StatePath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.StatePath, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Allocate": func() error { _, err := a.Allocate(context.Background(), "web"); return err }(),
		"All":      func() error { _, err := a.All(); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), cfg.StatePath) {
			t.Errorf("%s with a broken state file: %v, want an error naming it", name, err)
		}
	}
}

func TestAllocateWaitsForLock(t *testing.T) {
	a, cfg := newTest(t, nil, nil)
	held, err := lockfile.TryLock(cfg.LockPath)
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
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	allocate(t, a, "web")
}
