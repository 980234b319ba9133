package cell

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/state"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/lib/systemd", "sbin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"lib":          "usr/lib",              // relative, as merged /usr has it
		"sbin/init":    "/lib/systemd/systemd", // absolute: relative to the root
		"sbin/up":      "../../../../etc",      // cannot climb out of the root
		"sbin/loop":    "loop",                 // a loop
		"sbin/init2":   "../usr/lib/systemd/../systemd/systemd",
		"etc/shadowed": "/usr/lib/systemd/missing", // dangling
	}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]string{
		"/sbin/init":            "/usr/lib/systemd/systemd",
		"/sbin/init2":           "/usr/lib/systemd/systemd",
		"/lib/systemd/systemd":  "/usr/lib/systemd/systemd",
		"/sbin/up":              "/etc",
		"/sbin/../lib/systemd/": "/usr/lib/systemd",
	}
	for in, want := range cases {
		got, err := resolveIn(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%q) = %q, %v; want %q", in, got, err, filepath.Join(root, want))
		}
	}
	for _, in := range []string{"/sbin/loop", "/etc/shadowed", "/nope"} {
		if got, err := resolveIn(root, in); err == nil {
			t.Errorf("resolveIn(%q) = %q, want an error", in, got)
		}
	}
	if !initIsSystemd(root, "/sbin/init") || initIsSystemd(root, "/sbin/up") {
		t.Error("initIsSystemd")
	}
}

func TestUUID(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, err := newUUID()
	if err != nil || !form.MatchString(a) {
		t.Fatalf("newUUID() = %q, %v", a, err)
	}
	if b, _ := newUUID(); a == b {
		t.Error("two UUIDs are equal")
	}
	old := &state.Container{Name: "web", CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
	if got := uuidOf(old); !form.MatchString(got) || got != uuidOf(old) {
		t.Errorf("uuidOf(a record without one) = %q, not a stable UUID", got)
	}
	if got := uuidOf(&state.Container{Name: "web", UUID: a}); got != a {
		t.Errorf("uuidOf = %q, want the record's %q", got, a)
	}
}
