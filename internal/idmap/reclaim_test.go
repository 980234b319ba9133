package idmap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

// unusualPool delegates IDs that no process on the host is likely to run
// as, not even a real container's, which Stale would see.
var unusualPool = []string{"nixcell:4000000000:262144"}

// TestReclaim: ranges of an instance whose state directory is gone are
// stale; only Reclaim frees them, never Allocate, and never those of an
// instance that exists.
func TestReclaim(t *testing.T) {
	ctx := context.Background()
	_, cfgA := newTest(t, unusualPool, unusualPool)
	cfgB := another(t, cfgA, "b")
	a, b := New(cfgA), New(cfgB)
	webA := allocate(t, a, "web")
	webB, dbB := allocate(t, b, "web"), allocate(t, b, "db")
	if stale, err := a.Stale(); err != nil || len(stale) != 0 {
		t.Fatalf("Stale() with both instances present = %v, %v", stale, err)
	}
	if err := os.Remove(cfgB.Instance); err != nil {
		t.Fatal(err)
	}
	want := []Allocation{{cfgB.Instance, "web", webB}, {cfgB.Instance, "db", dbB}}
	stale, err := a.Stale()
	if err != nil || !slices.Equal(stale, want) {
		t.Fatalf("Stale() = %v, %v; want %v", stale, err, want)
	}
	// Allocate leaves them alone.
	if r := allocate(t, a, "next"); overlap(r, webB) || overlap(r, dbB) {
		t.Fatalf("Allocate took %v from the removed instance", r)
	}
	got, err := a.Reclaim(ctx)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Reclaim() = %v, %v; want %v", got, err, want)
	}
	if r, ok, err := b.Lookup("web"); ok || err != nil {
		t.Fatalf("b's web still holds %v after Reclaim (%v)", r, err)
	}
	if r, ok, _ := a.Lookup("web"); !ok || r != webA {
		t.Fatalf("a's web lost its range to Reclaim: %v, %v", r, ok)
	}
	if got, err := a.Reclaim(ctx); err != nil || len(got) != 0 {
		t.Fatalf("second Reclaim() = %v, %v", got, err)
	}
	if r := allocate(t, a, "again"); r != webB {
		t.Fatalf("allocation after Reclaim got %v, want the reclaimed %v", r, webB)
	}
}

// TestReclaimKeepsRangesInUse: a removed instance's range is not stale
// while a process on the host runs as one of its IDs.
func TestReclaimKeepsRangesInUse(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "sleep")
	ctx := context.Background()
	_, cfgA := newTest(t, unusualPool, unusualPool)
	cfgB := another(t, cfgA, "b")
	a, b := New(cfgA), New(cfgB)
	used, free := allocate(t, b, "used"), allocate(t, b, "free")
	if err := os.Remove(cfgB.Instance); err != nil {
		t.Fatal(err)
	}
	for _, cred := range []*syscall.Credential{
		{Uid: used.Start + 1000, Gid: 0},
		{Uid: 0, Gid: used.Start + 5},
		{Uid: 0, Gid: 0, Groups: []uint32{used.Start + RangeSize - 1}},
	} {
		t.Run(fmt.Sprintf("uid%d-gid%d-groups%v", cred.Uid, cred.Gid, cred.Groups), func(t *testing.T) {
			sleep := exec.Command("sleep", "60")
			sleep.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			if err := sleep.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
			want := []Allocation{{cfgB.Instance, "free", free}}
			if stale, err := a.Stale(); err != nil || !slices.Equal(stale, want) {
				t.Fatalf("Stale() while a process runs in %v = %v, %v; want %v", used, stale, err, want)
			}
		})
	}
	// With the processes gone, both go.
	got, err := a.Reclaim(ctx)
	if want := []Allocation{{cfgB.Instance, "used", used}, {cfgB.Instance, "free", free}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Reclaim() = %v, %v; want %v", got, err, want)
	}
}
