package idmap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzIDRanges: from any /etc/subuid, /etc/subgid and registry, the files
// read as an error naming the file, or a pool and held ranges from which
// the range picked lies in the pool, on no ID a container cannot map
// (4294967295), and apart from every range held. The registry is written
// where the allocator reads it, in a directory the fuzz target's
// executions share (each worker runs them one at a time).
func FuzzIDRanges(f *testing.F) {
	reg := `{"instances": {"/var/lib/nixcell": {"ranges": {"web": {"start": 1048576, "size": 65536}, "db": {"start": 1114112, "size": 65536}}},
	  "/srv/other": {"ranges": {"x": {"start": 1179648, "size": 65536}}, "conflicts": {"y": {"range": {"start": 1048576, "size": 65536},
	  "heldByInstance": "/var/lib/nixcell", "heldByContainer": "web"}}}}}`
	for _, s := range [][3]string{
		{reg, "", ""},
		{reg, "nixcell:100000:200000\n", "nixcell:150000:200000\n"},
		{reg, "alice:100000:65536\n# comment\n\nnixcell:1048576:131072\n", "nixcell:1048576:65536\nbob:1:2\n"},
		{`{"instances": {"/var/lib/nixcell": {"ranges": {"web": {"start": 4294967295, "size": 65536}, "z": {"start": 5, "size": 0}}}}}`,
			"nixcell:4294836224:131072\n", "nixcell:4294836224:131072\n"},
		{`{"instances": {"/var/lib/nixcell": null, "/x": {"ranges": null}}}`, "root:1048576:4293853184\n", ""},
		{`null`, "nixcell:0:4294967296\n", "nixcell:0:4294967296\n"},
		{``, "nixcell:1:4294967296\n", "nixcell:x:1\n"},
		{`{"instances": `, "nixcell:1:2:3\n", ":1:2\n"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), []byte(s[2]))
	}
	dir := f.TempDir()
	cfg := Config{Instance: "/var/lib/nixcell", RegistryPath: filepath.Join(dir, "ranges.json"),
		SubUIDPath: filepath.Join(dir, "subuid"), SubGIDPath: filepath.Join(dir, "subgid")}
	a := New(cfg)
	f.Fuzz(func(t *testing.T, registry, subuid, subgid []byte) {
		uids, uidErr := parseSubIDs(cfg.SubUIDPath, subuid)
		gids, gidErr := parseSubIDs(cfg.SubGIDPath, subgid)
		for _, e := range []struct {
			path string
			err  error
		}{{cfg.SubUIDPath, uidErr}, {cfg.SubGIDPath, gidErr}} {
			if e.err != nil && !strings.Contains(e.err.Error(), e.path) {
				t.Fatalf("the error does not name the file %s: %v", e.path, e.err)
			}
		}
		for _, e := range append(uids, gids...) {
			if e.lo >= e.hi || e.hi > 1<<32 || e.user == "" {
				t.Fatalf("parsed the entry %+v", e)
			}
		}
		if err := os.WriteFile(cfg.RegistryPath, registry, 0o600); err != nil {
			t.Fatal(err)
		}
		reg, err := a.read()
		if err != nil {
			if !strings.Contains(err.Error(), cfg.RegistryPath) {
				t.Fatalf("the error does not name the registry: %v", err)
			}
			return
		}
		for dir, in := range reg.Instances {
			if in == nil || in.Ranges == nil {
				t.Fatalf("the registry's instance %q reads as %+v, which an allocation cannot add to", dir, in)
			}
		}
		if _, err := a.All(); err != nil {
			t.Fatalf("All of a registry that reads: %v", err)
		}
		if uidErr != nil || gidErr != nil {
			return
		}
		p := newPool(uids, gids)
		for i, s := range p.spans {
			if s.lo >= s.hi || s.hi > 1<<32 || i > 0 && p.spans[i-1].hi >= s.lo {
				t.Fatalf("the pool's spans are not sorted, disjoint and apart: %v", p.spans)
			}
		}
		held := reg.held()
		r, ok := p.pick(held)
		if !ok {
			return
		}
		if r.Size != RangeSize || r.End() > 1<<32-1 || uint64(r.Start)%p.align != 0 {
			t.Fatalf("picked %s (start %d, size %d): not a whole, aligned range of mappable IDs", r, r.Start, r.Size)
		}
		inPool := false
		for _, s := range p.spans {
			inPool = inPool || s.lo <= uint64(r.Start) && r.End() <= s.hi
		}
		if !inPool {
			t.Fatalf("picked %s outside the pool %v", r, p.spans)
		}
		for _, h := range held {
			if h.Size > 0 && uint64(h.Start) < r.End() && h.End() > uint64(r.Start) {
				t.Fatalf("picked %s, which overlaps the held range %s", r, h)
			}
		}
	})
}
