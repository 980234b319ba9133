package runtime

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestClosureView: the view holds a mount point of each closure path's
// kind and of each bind mount below /nix/store, owned as the container's
// root; a second start finds it as it is; a change of the closure, the ID
// range or those bind mounts gives a new view, which replaces the old one
// and whatever a killed start left.
func TestClosureView(t *testing.T) {
	testutil.RequiresRoot(t)
	var dir, file string
	entries, err := os.ReadDir("/nix/store")
	if err != nil {
		testutil.Skip(t, "no /nix/store: "+err.Error())
	}
	for _, e := range entries {
		switch {
		case e.IsDir() && dir == "" && e.Name() != ".links":
			dir = "/nix/store/" + e.Name()
		case e.Type().IsRegular() && file == "" && e.Name() != ".gc.lock":
			file = "/nix/store/" + e.Name()
		}
	}
	if dir == "" || file == "" {
		testutil.Skip(t, "the store holds no directory and file to take as a closure")
	}
	c := &Container{ClosureViewDir: filepath.Join(t.TempDir(), "closure-view"), IDs: IDRange{Start: 3 << 20, Size: 65536},
		StorePaths: []string{dir, file}, Binds: []Bind{{Source: t.TempDir(), Destination: "/nix/store/extra/data"}}}
	view, err := c.closureView()
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, wantDir bool, uid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(view, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.IsDir() != wantDir || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("%s: %v owned by %d; want a directory: %t, owned by %d", p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, wantDir, uid)
		}
	}
	check(".", true, 3<<20)
	check(filepath.Base(dir), true, 0)
	check(filepath.Base(file), false, 0)
	check("extra/data", true, 0)

	if again, err := c.closureView(); err != nil || again != view {
		t.Errorf("the second time: %s, %v; want %s as it was", again, err, view)
	}
	killed := filepath.Join(c.ClosureViewDir, ".tmp-123")
	if err := os.Mkdir(killed, 0o700); err != nil {
		t.Fatal(err)
	}
	c.IDs.Start = 4 << 20
	other, err := c.closureView()
	if err != nil || other == view {
		t.Fatalf("with another ID range: %s, %v; want a new view", other, err)
	}
	left, _ := os.ReadDir(c.ClosureViewDir)
	if len(left) != 1 || left[0].Name() != filepath.Base(other) {
		t.Errorf("kept %v; want the new view alone", left)
	}
	c.StorePaths = []string{"/nix/store/../etc"}
	if _, err := c.closureView(); err == nil {
		t.Error("a path that is not a store path was taken")
	}
}
