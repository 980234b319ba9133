package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func TestShift(t *testing.T) {
	testutil.RequiresRoot(t)
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "root")
	for _, d := range []string{"etc", "home/alice"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]int{"etc/passwd": 0, "home/alice/notes": 1000, "setuid": 0, "foreign": 70000}
	for f, id := range files {
		p := filepath.Join(root, f)
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, id, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(root, "home/alice"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "setuid"), 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	const to = 3 << 30
	err := Shift{From: 0, Size: 65536, To: to}.Apply(root)
	var out *OutOfRangeError
	if !errors.As(err, &out) || out.Count != 1 {
		t.Fatalf("Apply = %v, want the one foreign file reported", err)
	}
	for p, want := range map[string]uint32{
		root: to, "etc": to, "etc/passwd": to, "home/alice": to + 1000, "home/alice/notes": to + 1000,
		"setuid": to, "link": to, "foreign": 70000,
	} {
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if u, g := owner(t, p); u != want || g != want {
			t.Errorf("%s owned by %d:%d, want %d", p, u, g, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "setuid")); fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("the set-user-ID bit was lost: %v", fi.Mode())
	}
	if u, _ := owner(t, victim); u != 0 {
		t.Errorf("the link's target was changed: owner %d", u)
	}
	// Back again.
	if err := (Shift{From: to, Size: 65536, To: 0}).Apply(root); !errors.As(err, &out) {
		t.Fatalf("shifting back: %v", err)
	}
	if u, _ := owner(t, filepath.Join(root, "home/alice/notes")); u != 1000 {
		t.Errorf("shifted back to %d", u)
	}
}
