package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestOpenRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	f, err := Open(real, unix.O_PATH)
	if err != nil {
		t.Fatalf("Open of a path without links: %v", err)
	}
	f.Close()
	for _, p := range []string{filepath.Join(dir, "link"), filepath.Join(dir, "link", ".")} {
		_, err := Open(p, unix.O_PATH)
		var se *SymlinkError
		if !errors.As(err, &se) {
			t.Errorf("Open(%s) = %v, want a *SymlinkError", p, err)
			continue
		}
		if want := p + " has a symbolic link in it"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}
	if _, err := Open("relative", unix.O_PATH); err == nil {
		t.Error("Open of a relative path succeeded")
	}
}

func TestOpenInStaysBeneath(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	inside := filepath.Join(dir, "inside")
	for _, d := range []string{outside, inside, filepath.Join(inside, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(inside, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub", filepath.Join(inside, "rel")); err != nil {
		t.Fatal(err)
	}
	root, err := os.Open(inside)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if f, err := OpenIn(root, "sub", unix.O_PATH, 0); err != nil {
		t.Errorf("OpenIn(sub): %v", err)
	} else {
		f.Close()
	}
	for _, rel := range []string{"abs", "rel", "../outside", "/etc", "rel/."} {
		_, err := OpenIn(root, rel, unix.O_PATH, 0)
		var se *SymlinkError
		if !errors.As(err, &se) {
			t.Errorf("OpenIn(%q) = %v, want a *SymlinkError", rel, err)
		}
	}
}

func TestMkdirAll(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "a", "b", "c")
	if err := MkdirAll(target, 0o750, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{filepath.Join(dir, "a"): 0o755, filepath.Join(dir, "a", "b"): 0o755, target: 0o750} {
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want a directory with mode %v", p, fi, err, mode)
		}
	}
	if err := MkdirAll(target, 0o700, 0, 0); err != nil {
		t.Errorf("MkdirAll of an existing directory: %v", err)
	}
	if fi, _ := os.Lstat(target); fi.Mode().Perm() != 0o750 {
		t.Errorf("MkdirAll changed an existing directory's mode to %v", fi.Mode().Perm())
	}
	// A link where a directory is expected: nothing is made through it.
	victim := filepath.Join(dir, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "planted")); err != nil {
		t.Fatal(err)
	}
	err := MkdirAll(filepath.Join(dir, "planted", "x"), 0o755, 0, 0)
	var se *SymlinkError
	if !errors.As(err, &se) {
		t.Errorf("MkdirAll through a link = %v, want a *SymlinkError", err)
	}
	if entries, _ := os.ReadDir(victim); len(entries) != 0 {
		t.Errorf("MkdirAll made %v in the link's target", entries)
	}
	// A file where a directory is expected.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(dir, "file", "x"), 0o755, 0, 0); err == nil {
		t.Error("MkdirAll below a file succeeded")
	}
}

func TestCheckClosed(t *testing.T) {
	testutil.RequiresRoot(t) // the directories must belong to root
	// /tmp/TestCheckClosed.../001/closed/open/tree, every parent above
	// closed open to all.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	closed := filepath.Join(base, "closed")
	open := filepath.Join(closed, "open")
	tree := filepath.Join(open, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckClosed(tree); err != nil {
		t.Errorf("a tree below a 0700 directory: %v", err)
	}
	if err := os.Chmod(closed, 0o711); err != nil {
		t.Fatal(err)
	}
	err := CheckClosed(tree)
	var re *ReachableError
	if !errors.As(err, &re) {
		t.Fatalf("a tree whose every parent others may pass = %v, want a *ReachableError", err)
	}
	if want := open + " has mode 0755"; re.Why != want {
		t.Errorf("Why = %q, want the nearest parent: %q", re.Why, want)
	}
	// A group other than root's may pass.
	if err := os.Chmod(closed, 0o710); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(closed, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := CheckClosed(tree); !errors.As(err, &re) {
		t.Errorf("a parent searchable by group 100 closes nothing: %v", err)
	}
	// The tree itself closes nothing: whoever writes in it can open it.
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckClosed(closed); !errors.As(err, &re) {
		t.Errorf("CheckClosed(%s) looked at %s itself: %v", closed, closed, err)
	}
}
