package e2e

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/testutil"
)

// Tests of issue 9's rule: the host's root never acts on a path that a
// container controls, and container root never becomes a host user's root.

// victim is a host file and directory that no container may reach. Tests
// point every link a container can plant at them and check, at the end,
// that nothing touched them.
type victim struct {
	t          *testing.T
	dir        string
	file, sub  string
	fileBefore string
	dirBefore  string
}

func newVictim(t *testing.T) *victim {
	t.Helper()
	v := &victim{t: t, dir: t.TempDir()}
	v.file, v.sub = filepath.Join(v.dir, "victim-file"), filepath.Join(v.dir, "victim-dir")
	if err := os.WriteFile(v.file, []byte("the host's own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.sub, "inside"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Old enough that any write would move the modification time.
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{v.file, filepath.Join(v.sub, "inside"), v.sub, v.dir} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	v.fileBefore, v.dirBefore = v.describe(v.file), v.describe(v.dir)
	return v
}

// describe is everything a write, chmod, chown or new entry would change.
func (v *victim) describe(path string) string {
	var b strings.Builder
	_ = filepath.Walk(path, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d %d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// check fails the test if anything of the victim changed.
func (v *victim) check(when string) {
	v.t.Helper()
	if got := v.describe(v.file); got != v.fileBefore {
		v.t.Errorf("%s: the victim file changed:\n%s\nwas\n%s", when, got, v.fileBefore)
	}
	if got := v.describe(v.dir); got != v.dirBefore {
		v.t.Errorf("%s: the victim directory changed:\n%s\nwas\n%s", when, got, v.dirBefore)
	}
}

// TestProfileReadOnly is the first finding: nix-env, run by the host's root
// on a container's profile, opened a lock file through a link the
// container planted there. The profile is now read-only inside; what the
// container manages itself is its own; and what a container of an earlier
// nixcell may have left there is refused or cleared before nix-env runs.
func TestProfileReadOnly(t *testing.T) {
	in := newInstance(t)
	v := newVictim(t)
	name := testutil.Name("prof")
	in.create(name, labelled("one"))
	in.must("start", name)
	ids := in.info(name).IDs

	for _, cmd := range [][]string{
		{"ln", "-s", v.file, "/nix/var/nix/profiles/system.lock"},
		{"ln", "-sf", v.file, "/nix/var/nix/profiles/system"},
		{"touch", "/nix/var/nix/profiles/new"},
	} {
		r := in.run(append([]string{"exec", name, "--"}, cmd...)...)
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("%v in the profile: %s", cmd, r)
		}
	}
	if r := in.run("exec", name, "--", "mount", "-o", "remount,bind,rw", "/nix/var/nix/profiles"); r.code == 0 {
		t.Errorf("the container remounted its profile read-write: %s", r)
	}

	// Its users' profiles and its GC roots are its own, below the host's
	// GC roots so that they keep their store paths alive.
	in.exec(name, "sh", "-c", `mkdir -p /nix/var/nix/profiles/per-user/root &&
ln -s "$(readlink -f /nix/var/nix/profiles/system)" /nix/var/nix/profiles/per-user/root/profile-1-link &&
ln -s /run/current-system /nix/var/nix/gcroots/current-system`)
	own := fmt.Sprintf("%d:%d", ids.Start, ids.Start)
	for _, p := range []string{
		filepath.Join(nix.GCRootsDir, name, "per-user-profiles", "root", "profile-1-link"),
		filepath.Join(nix.GCRootsDir, name, "current-system"),
	} {
		if got := owner(t, p); got != own {
			t.Errorf("%s is owned by %s on the host, want the container's root %s", p, got, own)
		}
	}

	// nix-env runs on the profile: update, rollback, delete-generations.
	start := time.Now()
	in.must("update", name, "-c", labelled("two"))
	in.must("rollback", name)
	in.must("delete-generations", name, "2")
	if took := time.Since(start); took > time.Minute {
		t.Errorf("update, rollback and delete-generations took %v", took)
	}
	v.check("after update, rollback and delete-generations")

	// What a container of an earlier nixcell could plant there.
	lock := filepath.Join(nix.ProfilesDir, name, "system.lock")
	_ = os.Remove(lock)
	if err := os.Symlink(v.file, lock); err != nil {
		t.Fatal(err)
	}
	r := in.run("update", name, "-c", labelled("three"))
	if r.code != 1 || !strings.Contains(r.stderr, "holds system.lock, which neither nix-env nor nixcell made there") {
		t.Errorf("update with a link planted as the profile's lock: %s", r)
	}
	v.check("after an update with a planted lock link")
	// A non-empty lock file is one Nix marked as deleted: nix-env would
	// wait on it for ever.
	_ = os.Remove(lock)
	if err := os.WriteFile(lock, []byte("d"), 0o600); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if r := in.run("update", name, "-c", labelled("three")); r.code != 0 {
		t.Errorf("update with a stale lock file: %s", r)
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("update with a stale lock file took %v", took)
	}
	in.waitHTTP(name, "three\n")
}

// TestBindOwnership is the second finding: a read-write bind mount was
// idmapped so that the container's root wrote as the host's root, setuid
// bit included, into a directory host users could reach. Now what the
// container writes there belongs to its own ID range, unless the bind says
// writeAsHostRoot, which warns.
func TestBindOwnership(t *testing.T) {
	in := newInstance(t)
	bin := probe(t)
	host := t.TempDir()
	// Reachable by every host user, as /srv or /data would be.
	for _, d := range []string{filepath.Dir(host), host} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rw, made, asRoot := filepath.Join(host, "rw"), filepath.Join(host, "made"), filepath.Join(host, "asroot")
	for _, d := range []string{rw, asRoot} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "by-1000"), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(d, "by-1000"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	name := testutil.Name("own")
	r := in.run(append([]string{"create", name, nixFile(t, "own.nix", fmt.Sprintf(`{
  bindMounts."/rw" = { hostPath = "%s"; isReadOnly = false; };
  bindMounts."/made" = { hostPath = "%s"; isReadOnly = false; create = true; };
  bindMounts."/asroot" = { hostPath = "%s"; isReadOnly = false; writeAsHostRoot = true; };
  configuration = { };
}`, rw, made, asRoot))}, nixArgs...)...)
	if r.code != 0 {
		t.Fatalf("create: %s", r)
	}
	if !strings.Contains(r.stderr, "bind mount /asroot: the container's root writes to "+asRoot+" as the host's root (writeAsHostRoot); host users other than root can reach "+asRoot) {
		t.Errorf("create does not warn of writeAsHostRoot on a reachable path: %s", r.stderr)
	}
	in.must("start", name)
	ids := in.info(name).IDs
	range0 := fmt.Sprintf("%d:%d", ids.Start, ids.Start)
	in.installProbe(name, bin)

	t.Run("plain-bind", func(t *testing.T) {
		if got := in.exec(name, "stat", "-c", "%u:%g", "/rw/by-1000"); got != "65534:65534\n" {
			t.Errorf("a host user's file appears owned by %q inside, want nobody (65534)", got)
		}
		if r := in.run("exec", name, "--", "touch", "/rw/new"); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("the container's root wrote to a directory of the host's root: %s", r)
		}
	})
	t.Run("created-for-the-container", func(t *testing.T) {
		if got := owner(t, made); got != range0 {
			t.Errorf("create = true made %s owned by %s, want the container's root %s", made, got, range0)
		}
		// The attack: a setuid program of "root" for host users.
		in.exec(name, "sh", "-c", "cp /usr/bin/nixcell-probe /made/x && chown 0:0 /made/x && chmod 4755 /made/x")
		x := filepath.Join(made, "x")
		if got := owner(t, x); got != range0 {
			t.Errorf("the container root's file is owned by %s on the host, want %s", got, range0)
		}
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", x, "setuid").CombinedOutput()
		if err != nil {
			t.Fatalf("running it as a host user: %v\n%s", err, out)
		}
		if want := fmt.Sprintf("euid %d\nsetuid EPERM\n", ids.Start); string(out) != want {
			t.Errorf("a host user running the container's setuid program got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("write-as-host-root", func(t *testing.T) {
		if got := in.exec(name, "stat", "-c", "%u:%g", "/asroot/by-1000"); got != "1000:1000\n" {
			t.Errorf("with writeAsHostRoot a host user's file appears owned by %q inside, want 1000:1000", got)
		}
		in.exec(name, "touch", "/asroot/new")
		if got := owner(t, filepath.Join(asRoot, "new")); got != "0:0" {
			t.Errorf("with writeAsHostRoot the container's root writes as %s, want 0:0", got)
		}
	})
	t.Run("read-only-stays", func(t *testing.T) {
		for _, mnt := range []string{"/nix/store", "/nix/var/nix/profiles"} {
			if r := in.run("exec", name, "--", "mount", "-o", "remount,bind,rw", mnt); r.code == 0 {
				t.Errorf("remounting %s read-write succeeded: %s", mnt, r)
			}
		}
	})
}

// TestNestedBindLink is the third finding: with /data and /data/sub bound
// read-write from H and H/sub, the container replaced H/sub by a link to a
// host directory, which the next start mounted into it. Host paths are now
// opened without following links: that start fails, naming the link.
func TestNestedBindLink(t *testing.T) {
	in := newInstance(t)
	v := newVictim(t)
	h := filepath.Join(t.TempDir(), "h")
	name := testutil.Name("nest")
	in.create(name, fmt.Sprintf(`{
  bindMounts."/data" = { hostPath = "%s"; isReadOnly = false; create = true; };
  bindMounts."/data/sub" = { hostPath = "%s/sub"; isReadOnly = false; create = true; };
  configuration = { };
}`, h, h))
	in.must("start", name)
	in.exec(name, "sh", "-c", fmt.Sprintf("umount /data/sub && rmdir /data/sub && ln -s %s /data/sub", v.sub))
	in.must("stop", name)
	r := in.run("start", name)
	if r.code != 1 || !strings.Contains(r.stderr, "bind mount /data/sub: "+h+"/sub has a symbolic link in it; nixcell follows no link in a host path") {
		t.Errorf("start with a planted link as a bind mount's host path: %s", r)
	}
	if in.info(name).State != "stopped" {
		t.Errorf("the container runs after a refused start")
	}
	v.check("after the start")
	// Once the link is gone, the path is made again and the start works.
	if err := os.Remove(filepath.Join(h, "sub")); err != nil {
		t.Fatal(err)
	}
	in.must("start", name)
	if out := in.exec(name, "ls", "/data/sub"); out != "" {
		t.Errorf("/data/sub holds %q", out)
	}
}

// TestPlainRootReachable: an unprivileged container writes to its plain
// root file system as the host's root, so nixcell refuses one that host
// users can reach, at create and at start.
func TestPlainRootReachable(t *testing.T) {
	in := newInstance(t)
	dir := busyboxRoot(t) // below a 0700 directory
	name := testutil.Name("reach")
	in.must("create", name, "--rootfs", dir)
	parent := filepath.Dir(dir)
	opened := []string{filepath.Dir(parent), parent}
	for _, d := range opened {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := "host users other than root can reach " + dir
	if r := in.run("start", name); r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "chmod 0700 "+parent) {
		t.Errorf("start of a reachable plain root: %s", r)
	}
	other := testutil.Name("reach")
	if r := in.run("create", other, "--rootfs", dir); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("create with a reachable plain root: %s", r)
	}
	if r := in.run("exists", other); r.code != 1 {
		t.Errorf("a refused create left %s: %s", other, r)
	}
	// A privileged container's root is the host's root anyway.
	in.must("create", other, "--rootfs", dir, "--privileged")
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	in.must("start", name)
}

// TestHostPathFuzz replaces, as the container's root, every path in its
// trees that the host touches (CONTRIBUTING.md's list) with links to a
// victim file and directory, hard links, FIFOs and non-empty files, then
// runs every command, copies (clone, snapshot, restore, export, import)
// included: the victim is never touched, and each command succeeds or
// fails with a one-line error in bounded time.
func TestHostPathFuzz(t *testing.T) {
	in := newInstance(t)
	data := filepath.Join(t.TempDir(), "data")
	for _, c := range []struct{ kind, group string }{
		{"link-file", "root"}, {"link-dir", "root"}, {"fifo", "root"}, {"hardlink", "root"}, {"file", "root"},
		{"link-file", "nix"}, {"link-dir", "nix"}, {"fifo", "nix"}, {"hardlink", "nix"}, {"file", "nix"},
	} {
		kind := c.kind
		t.Run(c.group+"-"+kind, func(t *testing.T) {
			v := newVictim(t)
			name := testutil.Name("fuzz")
			in.create(name, fmt.Sprintf(`{
  bindMounts."/data" = { hostPath = "%[1]s-%[2]s"; isReadOnly = false; create = true; };
  bindMounts."/data/sub" = { hostPath = "%[1]s-%[2]s/sub"; isReadOnly = false; create = true; };
  configuration = { system.fixture.label = "one"; };
}`, data, c.group+"-"+kind))
			in.must("start", name)
			target := map[string]string{"link-file": v.file, "link-dir": v.sub}[kind]
			var script strings.Builder
			for _, p := range hostTouchedPaths[c.group] {
				fmt.Fprintf(&script, "umount %[1]s 2>/dev/null; rm -rf %[1]s 2>/dev/null; ", p)
				switch kind {
				case "link-file", "link-dir":
					fmt.Fprintf(&script, "ln -s %s %s; ", target, p)
				case "fifo":
					fmt.Fprintf(&script, "mkfifo %s; ", p)
				case "hardlink":
					fmt.Fprintf(&script, "ln /etc/hostname %s; ", p)
				case "file":
					fmt.Fprintf(&script, "echo planted > %s; ", p)
				}
			}
			in.run("exec", name, "--", "sh", "-c", script.String()) // some paths are busy mount points: that is fine
			// The copies (issue 15) read every planted entry and write
			// them elsewhere: as links, nodes and hard links, never
			// through them.
			archive := filepath.Join(t.TempDir(), "fuzz.tar.gz")
			clone, imported := name+"-c", name+"-i"
			commands := [][]string{
				{"stop", "--timeout", "10s", name},
				{"start", name},
				{"update", name, "-c", "{ system.fixture.label = \"two\"; }"},
				{"rollback", name},
				{"delete-generations", name, "old"},
				{"snapshot", name, "fuzz"},
				{"clone", name, clone},
				{"export", name, "-o", archive},
				{"import", "--trust-settings", archive, imported}, // its bind mounts are the test's own
				{"restore", name, "fuzz"},
				{"start", clone},
				{"destroy", clone},
				{"destroy", imported},
				{"stop", "--timeout", "10s", name},
				{"start", name},
				{"terminate", name},
				{"destroy", name},
			}
			for _, c := range commands {
				start := time.Now()
				r := in.run(c...)
				took := time.Since(start)
				if took > 2*time.Minute {
					t.Errorf("%v took %v", c, took)
				}
				lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
				last := lines[len(lines)-1]
				switch {
				case r.code == 0:
				case r.code == 1 && strings.HasPrefix(last, "nixcell: "):
					t.Logf("%v: %s", c, last)
				case r.code == 3 || r.code == 1 && strings.Contains(last, "not running"):
				default:
					t.Errorf("%v: %s", c, r)
				}
				v.check(fmt.Sprintf("after %v", c))
			}
			if r := in.run("exists", name); r.code != 1 {
				t.Errorf("destroy left the container: %s", r)
			}
		})
	}
}

// hostTouchedPaths are the paths inside a container that name host paths
// the host creates, opens, changes or mounts (CONTRIBUTING.md), as far as
// the container can reach them, in two groups: what prepareRoot makes in
// its root and a nested bind mount's host path; and its GC roots and
// users' profiles, which, replaced, stop its next start (so the first
// group is planted alone, to reach every command on a running container).
var hostTouchedPaths = map[string][]string{
	"root": {"/etc/os-release", "/etc/machine-id", "/usr/bin", "/var/lib/private", "/root", "/tmp", "/data/sub"},
	"nix":  {"/nix/var/nix/gcroots/per-user-profiles", "/nix/var/nix/gcroots/current-system", "/nix/var/nix/profiles/per-user/root"},
}
