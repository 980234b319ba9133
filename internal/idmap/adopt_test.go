package idmap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLegacy gives the instance of cfg a legacy allocation file holding
// ranges, and returns cfg with LegacyPath set.
func writeLegacy(t *testing.T, cfg Config, ranges string) Config {
	t.Helper()
	cfg.LegacyPath = filepath.Join(cfg.Instance, "idmap.json")
	if err := os.WriteFile(cfg.LegacyPath, []byte(`{"ranges": {`+ranges+`}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func legacyGone(t *testing.T, cfg Config) {
	t.Helper()
	if _, err := os.Lstat(cfg.LegacyPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was not removed after adoption: %v", cfg.LegacyPath, err)
	}
}

// TestAdopt: two instances' files of before, which overlap in one range,
// are adopted on each instance's first use; the first keeps the shared
// range, the other's container reports the conflict until it is released.
func TestAdopt(t *testing.T) {
	ctx := context.Background()
	_, cfgA := newTest(t, nil, nil)
	cfgB := another(t, cfgA, "b")
	cfgA = writeLegacy(t, cfgA, `"web": {"start": 1048576, "size": 65536}, "db": {"start": 1114112, "size": 65536}`)
	// b's web straddles a's two ranges; its x overlaps nothing.
	cfgB = writeLegacy(t, cfgB, `"web": {"start": 1081344, "size": 65536}, "x": {"start": 1179648, "size": 65536}`)
	a, b := New(cfgA), New(cfgB)

	// a's first use is a listing.
	all, err := a.All()
	if err != nil {
		t.Fatal(err)
	}
	webA, dbA := Range{1048576, RangeSize}, Range{1114112, RangeSize}
	if len(all) != 2 || all["web"] != webA || all["db"] != dbA {
		t.Fatalf("a.All() after adoption = %v", all)
	}
	legacyGone(t, cfgA)

	// b's is a lookup.
	if r, ok, err := b.Lookup("x"); !ok || err != nil || r != (Range{1179648, RangeSize}) {
		t.Fatalf("b.Lookup(x) = %v, %v, %v", r, ok, err)
	}
	legacyGone(t, cfgB)
	_, ok, err := b.Lookup("web")
	if ok || !errors.Is(err, ErrConflict) {
		t.Fatalf("b.Lookup(web) = %v, %v; want ErrConflict", ok, err)
	}
	for _, s := range []string{`"web"`, cfgA.Instance, cfgB.Instance, "1081344-1146879", "destroy", "nixcell --state-dir " + cfgB.Instance + " destroy web"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("conflict error %q does not mention %s", err, s)
		}
	}
	if _, err := b.Allocate(ctx, "web"); !errors.Is(err, ErrConflict) {
		t.Fatalf("b.Allocate(web) = %v; want ErrConflict", err)
	}
	if all, err := b.All(); err != nil || len(all) != 1 {
		t.Fatalf("b.All() = %v, %v; want x alone", all, err)
	}
	if r, ok, err := a.Lookup("web"); !ok || err != nil || r != webA {
		t.Fatalf("a.Lookup(web) = %v, %v, %v: the first adopted keeps its range", r, ok, err)
	}

	// The conflicting range is kept from new allocations while b's web
	// stands: freeing a's ranges frees nothing it overlaps.
	if err := a.Release(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if r := allocate(t, a, "new"); r != (Range{1245184, RangeSize}) {
		t.Fatalf("allocation beside a conflict got %v, want the first range past it and x", r)
	}
	if err := b.Release(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Lookup("web"); ok || err != nil {
		t.Fatalf("b.Lookup(web) after release = %v, %v", ok, err)
	}
	if r := allocate(t, b, "web"); r != webA {
		t.Fatalf("b's web created again got %v, want the freed %v", r, webA)
	}
}

// TestAdoptAgain: a legacy file that is still there after its adoption (a
// process killed between writing the registry and removing the file) is
// adopted again without changing anything.
func TestAdoptAgain(t *testing.T) {
	_, cfg := newTest(t, nil, nil)
	const ranges = `"web": {"start": 1048576, "size": 65536}`
	cfg = writeLegacy(t, cfg, ranges)
	a := New(cfg)
	web := allocate(t, a, "web")
	db := allocate(t, a, "db")
	before, err := os.ReadFile(cfg.RegistryPath)
	if err != nil {
		t.Fatal(err)
	}
	writeLegacy(t, cfg, ranges)
	if r := allocate(t, a, "web"); r != web {
		t.Fatalf("web = %v after adopting again, want %v", r, web)
	}
	after, err := os.ReadFile(cfg.RegistryPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Fatalf("adopting again changed the registry:\n%s\nto:\n%s", before, after)
	}
	legacyGone(t, cfg)
	if r, _, _ := a.Lookup("db"); r != db {
		t.Fatalf("db = %v, want %v", r, db)
	}
}

// TestAdoptOnAllocate: a new container's allocation adopts first, so it
// never takes a range the instance's old containers hold.
func TestAdoptOnAllocate(t *testing.T) {
	_, cfg := newTest(t, nil, nil)
	cfg = writeLegacy(t, cfg, `"old": {"start": 1048576, "size": 65536}`)
	if r := allocate(t, New(cfg), "new"); r != (Range{1114112, RangeSize}) {
		t.Fatalf("new got %v beside the adopted 1048576", r)
	}
	legacyGone(t, cfg)
}

func TestAdoptMalformed(t *testing.T) {
	_, cfg := newTest(t, nil, nil)
	for _, content := range []string{`"web": `, `"web": {"start": 1048576, "size": 0}`} {
		cfg := writeLegacy(t, cfg, content)
		a := New(cfg)
		_, err := a.Allocate(context.Background(), "web")
		if err == nil || !strings.Contains(err.Error(), cfg.LegacyPath) || !strings.Contains(err.Error(), "repair") {
			t.Errorf("Allocate with legacy %q: %v, want an error naming the file and the fix", content, err)
		}
		if _, err := a.All(); err == nil {
			t.Errorf("All with legacy %q succeeded", content)
		}
		if _, err := os.Stat(cfg.LegacyPath); err != nil {
			t.Errorf("the malformed file was removed: %v", err)
		}
		if _, err := os.Stat(cfg.RegistryPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("registry written despite the error: %v", err)
		}
	}
}
