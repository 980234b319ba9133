package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/testutil"
)

// hostRanges reads every range the host-wide registry gives a container,
// by "INSTANCE CONTAINER", as an administrator would read the file.
// (Conflicts, ranges adopted from two instances' files of before that
// overlap, are left out: they overlap by definition, and are reported.)
func hostRanges(t *testing.T) map[string]idmap.Range {
	t.Helper()
	var reg struct {
		Instances map[string]struct {
			Ranges map[string]idmap.Range `json:"ranges"`
		} `json:"instances"`
	}
	if err := atomicfile.ReadJSON(idmap.DefaultRegistryPath, &reg); err != nil {
		t.Fatalf("reading the registry: %v", err)
	}
	all := map[string]idmap.Range{}
	for dir, in := range reg.Instances {
		for name, r := range in.Ranges {
			all[dir+" "+name] = r
		}
	}
	return all
}

// checkDistinct fails the test if two ranges of the registry overlap.
func checkDistinct(t *testing.T) {
	t.Helper()
	all := hostRanges(t)
	for k1, r1 := range all {
		for k2, r2 := range all {
			if k1 < k2 && r1.End() > uint64(r2.Start) && r2.End() > uint64(r1.Start) {
				t.Errorf("the registry gives overlapping ranges to %s (%v) and %s (%v)", k1, r1, k2, r2)
			}
		}
	}
}

// checkMapped returns the range the running container's init runs with, as
// its uid_map says, and checks that its gid_map, state --json and the
// host-wide registry say the same.
func (in *instance) checkMapped(name string) idmap.Range {
	in.t.Helper()
	i := in.info(name)
	if i.State != "running" {
		in.t.Errorf("%s is %s, not running", name, i.State)
		return idmap.Range{}
	}
	var maps [2]idmap.Range
	for k, f := range []string{"uid_map", "gid_map"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", i.Pid, f))
		if err != nil {
			in.t.Fatalf("%s: %v", name, err)
		}
		var inside uint32
		if _, err := fmt.Sscan(string(data), &inside, &maps[k].Start, &maps[k].Size); err != nil || inside != 0 || strings.Count(string(data), "\n") != 1 {
			in.t.Fatalf("%s: %s of its init is %q, want one line mapping 0", name, f, data)
		}
	}
	mapped := maps[0]
	if maps[1] != mapped {
		in.t.Errorf("%s: its init's uid_map maps %v, its gid_map %v", name, mapped, maps[1])
	}
	if i.IDs == nil || i.IDs.Start != mapped.Start || i.IDs.Size != mapped.Size {
		in.t.Errorf("%s: state --json says ids %+v, its init runs with %v", name, i.IDs, mapped)
	}
	if r, ok, err := in.ranges().Lookup(name); err != nil || !ok || r != mapped {
		in.t.Errorf("%s: the registry says %v, %v, %v; its init runs with %v", name, r, ok, err, mapped)
	}
	return mapped
}

// TestRangesHostWide: two instances create and start containers at once,
// among them one of the same name in both. Every range on the host is
// distinct, each container runs with the range the host-wide registry
// records for its instance, and destroying one instance's containers frees
// none of the other's.
func TestRangesHostWide(t *testing.T) {
	a, b := newInstance(t), newInstance(t)
	system := prebuilt(t, webConfig)
	type ctr struct {
		in         *instance
		name, root string // root: a plain root, else the prebuilt system
	}
	var ctrs []ctr
	for k := 0; k < 10; k++ {
		ctrs = append(ctrs, ctr{a, testutil.Name(fmt.Sprintf("hwa%d", k)), ""}, ctr{b, testutil.Name(fmt.Sprintf("hwb%d", k)), ""})
	}
	// Nix profiles are named host-wide, so the two of one name are plain
	// roots, which have none.
	same := testutil.Name("same")
	ctrs = append(ctrs, ctr{a, same, busyboxRoot(t)}, ctr{b, same, busyboxRoot(t)})

	var wg sync.WaitGroup
	errs := make([]string, len(ctrs))
	for k, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			create := []string{"create", c.name, "--system", system}
			if c.root != "" {
				create = []string{"create", c.name, "--rootfs", c.root}
			}
			if r := c.in.run(create...); r.code != 0 {
				errs[k] = "create: " + r.String()
				return
			}
			if r := c.in.run("start", c.name); r.code != 0 {
				errs[k] = "start: " + r.String()
			}
		}()
	}
	wg.Wait()
	for k, e := range errs {
		if e != "" {
			t.Errorf("%s of %s: %s", ctrs[k].name, ctrs[k].in.dir, e)
		}
	}
	if t.Failed() {
		return
	}

	checkDistinct(t)
	held := map[*instance]map[string]idmap.Range{}
	for _, in := range []*instance{a, b} {
		all, err := in.ranges().All()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 11 {
			t.Errorf("instance %s holds %d ranges, want 11: %v", in.dir, len(all), all)
		}
		held[in] = all
	}
	mapped := make([]idmap.Range, len(ctrs))
	for k, c := range ctrs {
		mapped[k] = c.in.checkMapped(c.name)
		if mapped[k] != held[c.in][c.name] {
			t.Errorf("%s of %s runs with %v, All says %v", c.name, c.in.dir, mapped[k], held[c.in][c.name])
		}
		for j, o := range mapped[:k] {
			if mapped[k].End() > uint64(o.Start) && o.End() > uint64(mapped[k].Start) {
				t.Errorf("%s of %s runs with %v, overlapping %v of %s of %s", c.name, c.in.dir, mapped[k], o, ctrs[j].name, ctrs[j].in.dir)
			}
		}
	}

	for _, c := range ctrs {
		if c.in == a {
			a.must("destroy", "--timeout", "5s", c.name)
		}
	}
	if all, err := a.ranges().All(); err != nil || len(all) != 0 {
		t.Errorf("instance a still holds %v (%v) after destroying its containers", all, err)
	}
	for _, c := range ctrs {
		if c.in == b {
			if r := b.checkMapped(c.name); r != held[b][c.name] {
				t.Errorf("%s of b now holds %v, had %v", c.name, r, held[b][c.name])
			}
		}
	}
	// A freed range goes to the next container, of either instance,
	// and never to one that b still holds.
	next := testutil.Name("next")
	b.must("create", next, "--system", system)
	b.must("start", next)
	r := b.checkMapped(next)
	for name, h := range held[b] {
		if h == r {
			t.Errorf("%s got %v, which %s of b holds", next, r, name)
		}
	}
	checkDistinct(t)
}

// TestRangesAdopted: an instance from before ranges were host-wide has its
// own STATE/idmap.json. Its ranges are adopted on first use and its
// containers keep them; one whose range another instance holds already
// fails to start with an error naming both and the fix, and gets a range
// of its own when created again.
func TestRangesAdopted(t *testing.T) {
	a, b := newInstance(t), newInstance(t)
	x, y, w := testutil.Name("adx"), testutil.Name("ady"), testutil.Name("adw")
	a.must("create", x, "--rootfs", busyboxRoot(t))
	b.must("create", y, "--rootfs", busyboxRoot(t))
	b.must("create", w, "--rootfs", busyboxRoot(t))
	rx, _, _ := a.ranges().Lookup(x)
	ry, _, _ := b.ranges().Lookup(y)

	// Make b an instance of before: its ranges in its own file, y's its
	// own, w's the one a's x holds, and none in the registry.
	ctx := context.Background()
	for _, n := range []string{y, w} {
		if err := b.ranges().Release(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	old, err := json.Marshal(map[string]map[string]idmap.Range{"ranges": {y: ry, w: rx}})
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(b.dir, "idmap.json")
	if err := os.WriteFile(legacy, old, 0o600); err != nil {
		t.Fatal(err)
	}

	if out := b.must("list"); !strings.Contains(out, y) {
		t.Fatalf("list of b: %s", out)
	}
	if _, err := os.Lstat(legacy); !os.IsNotExist(err) {
		t.Errorf("%s is still there after its adoption: %v", legacy, err)
	}
	b.must("start", y)
	if r := b.checkMapped(y); r != ry {
		t.Errorf("%s runs with %v after adoption, had %v", y, r, ry)
	}
	r := b.run("start", w)
	for _, s := range []string{"nixcell: start " + w + ":", rx.String(), x, a.store.Root, b.store.Root, "destroy " + w} {
		if r.code != 1 || !strings.Contains(r.stderr, s) {
			t.Errorf("start of %s sharing %s's range: %s; want exit 1 and an error mentioning %s", w, x, r, s)
		}
	}
	a.must("start", x)
	if got := a.checkMapped(x); got != rx {
		t.Errorf("%s runs with %v, had %v: the first adopted keeps its range", x, got, rx)
	}
	checkDistinct(t)

	b.must("destroy", w)
	b.must("create", w, "--rootfs", busyboxRoot(t))
	b.must("start", w)
	if rw := b.checkMapped(w); rw == rx || rw == ry {
		t.Errorf("%s created again got %v", w, rw)
	}
	checkDistinct(t)
}
