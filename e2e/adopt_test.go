package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

// nixosContainer lays a container out as nixos-container does: its
// configuration file, its root (files of the host's root and of uid 1000)
// and its profile with two generations and a user profile.
func nixosContainer(t *testing.T, name, conf string) (confFile, root string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	confFile, root = filepath.Join(dir, name+".conf"), filepath.Join(dir, name)
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, uid := range map[string]int{"var/lib/app/data": 0, "home/alice/notes": 1000} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("kept "+path+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(root, "home/alice"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(nix.ProfilesDir, name)
	if err := os.MkdirAll(filepath.Join(profile, "per-user", "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(profile); os.RemoveAll(filepath.Join(nix.GCRootsDir, name)) })
	for _, label := range []string{"one", "two"} {
		system := prebuilt(t, fmt.Sprintf(`{ services.httpd.enable = true; services.httpd.text = "%s\n"; system.fixture.label = "%s"; }`, label, label))
		if out, err := exec.Command("nix-env", "-p", filepath.Join(profile, "system"), "--set", system).CombinedOutput(); err != nil {
			t.Fatalf("nix-env --set: %v\n%s", err, out)
		}
	}
	if err := os.Symlink("/nix/store/dummy-profile", filepath.Join(profile, "per-user", "root", "profile-1-link")); err != nil {
		t.Fatal(err)
	}
	return confFile, root
}

// TestAdopt takes over a nixos-container container: its generations,
// data and addresses survive and its service answers; a second adopt is
// refused; a configuration with what nixcell cannot honour is refused with
// the list.
func TestAdopt(t *testing.T) {
	in := newInstance(t)
	k := freeSubnet(t, func(k int) []string { return []string{fmt.Sprintf("10.242.%d.0/24", k)} })
	host, local := fmt.Sprintf("10.242.%d.1", k), fmt.Sprintf("10.242.%d.2", k)
	name := testutil.Name("adopt")
	conf, root := nixosContainer(t, name, fmt.Sprintf("# nixos-container\nPRIVATE_NETWORK=1\nHOST_ADDRESS=%s\nLOCAL_ADDRESS=%s\nAUTO_START=0\n", host, local))

	r := in.run("adopt", "--dry-run", "--conf", conf, "--root", root, name)
	if r.code != 0 || !strings.Contains(r.stdout, "would adopt "+name) || !strings.Contains(r.stdout, "generations  1 2 (current 2)") || !strings.Contains(r.stdout, "user profiles root") {
		t.Errorf("adopt --dry-run: %s", r)
	}
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("a dry run changed the configuration: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("a dry run moved the root: %v", err)
	}
	if r := in.run("exists", name); r.code != 1 {
		t.Errorf("a dry run made the container: %s", r)
	}

	in.must("adopt", "--conf", conf, "--root", root, name)
	ids := in.info(name).IDs
	if ids == nil {
		t.Fatal("no ID range")
	}
	if got := in.numbers(name); got != "1 2c" {
		t.Errorf("generations after adopt: %q, want 1 2c", got)
	}
	newRoot := in.store.RootFS(name)
	if got, want := owner(t, filepath.Join(newRoot, "home/alice/notes")), fmt.Sprintf("%d:%d", ids.Start+1000, ids.Start+1000); got != want {
		t.Errorf("alice's file is owned by %s on the host, want %s", got, want)
	}
	if got := owner(t, filepath.Join(nix.GCRootsDir, name, "per-user-profiles", "root", "profile-1-link")); got != fmt.Sprintf("%d:%d", ids.Start, ids.Start) {
		t.Errorf("the moved user profile is owned by %s", got)
	}
	if _, err := os.Stat(conf + ".adopted-by-nixcell"); err != nil {
		t.Errorf("the configuration was not retired: %v", err)
	}
	in.must("start", name)
	waitFor(t, 20*time.Second, "the adopted service on "+local, func() bool {
		body, err := httpGet(t, "", local+":80")
		return err == nil && body == "two\n"
	})
	if got := in.exec(name, "stat", "-c", "%u %n", "/home/alice/notes", "/var/lib/app/data"); got != "1000 /home/alice/notes\n0 /var/lib/app/data\n" {
		t.Errorf("owners inside: %q", got)
	}
	if got := in.exec(name, "cat", "/var/lib/app/data"); got != "kept var/lib/app/data\n" {
		t.Errorf("data: %q", got)
	}
	in.must("rollback", name)
	if in.label(name) != "one" {
		t.Errorf("rollback to the adopted generation 1: label %q", in.label(name))
	}
	if r := in.run("adopt", "--conf", conf+".adopted-by-nixcell", "--root", root, name); r.code != 1 || !strings.Contains(r.stderr, "is a nixcell container already") {
		t.Errorf("a second adopt: %s", r)
	}

	other := testutil.Name("adopt")
	conf2, root2 := nixosContainer(t, other, "PRIVATE_NETWORK=1\nHOST_ADDRESS=10.1.1.1\nLOCAL_ADDRESS=10.1.1.2\nEXTRA_NSPAWN_FLAGS=--bind=/srv\nINTERFACES=eth1\n")
	r = in.run("adopt", "--conf", conf2, "--root", root2, other)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot honour EXTRA_NSPAWN_FLAGS=--bind=/srv, INTERFACES=eth1") {
		t.Errorf("adopt with options nixcell cannot honour: %s", r)
	}
	if r := in.run("exists", other); r.code != 1 {
		t.Errorf("a refused adopt left %s", other)
	}
}
