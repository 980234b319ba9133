package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/testutil"
)

// smallFS makes an ext4 file system of size MiB in an image file (mkfs
// options extra), mounts it through a loop device and returns where; it
// is unmounted and its loop device detached when the test ends, whether
// it passed or not. The caller's state directory goes below it, so that
// the harness's check for leftover mounts of the instance does not take
// the file system itself for one.
func smallFS(t *testing.T, size int, extra ...string) string {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "mkfs.ext4", "losetup", "mount", "umount")
	dir := testutil.StateDir(t) // searchable by container users, removed last
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(size)<<20); err != nil {
		t.Fatal(err)
	}
	// -m 0: no blocks reserved for root, so that the file system the
	// container fills is full for nixcell too.
	args := append([]string{"-q", "-F", "-m", "0"}, extra...)
	if out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		for i := 0; ; i++ {
			out, err := exec.Command("umount", dir).CombinedOutput()
			if err == nil || strings.Contains(string(out), "not mounted") {
				break
			}
			if i == 50 {
				t.Errorf("cleanup: umount %s: %v\n%s", dir, err, out)
				_ = exec.Command("umount", "--lazy", dir).Run()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup --detach %s: %v\n%s", dev, err, out)
		}
	})
	opts := []string{}
	if len(extra) > 0 {
		opts = append(opts, "-o", "prjquota")
	}
	if out, err := exec.Command("mount", append(opts, dev, dir)...).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", dev, err, out)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o711); err != nil {
		t.Fatal(err)
	}
	return state
}

// freeBytes is what the file system at path has free for writers (what
// ext4 reserves for its own metadata is not).
func freeBytes(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// fill has the running container write zeros into its root until its
// file system is full, and then nixcell's own side until not a block is
// left.
func (in *instance) fill(name string) {
	in.t.Helper()
	r := in.run("exec", name, "--", "dd", "if=/dev/zero", "of=/fill", "bs=1M")
	if r.code == 0 || !strings.Contains(r.stderr, "No space left") {
		in.t.Fatalf("dd into the container's root until the file system is full: %s", r)
	}
	// What the container could not use (a partial block, room in the
	// journal's reserve) goes too, in files of shrinking size.
	for i, size := 0, 64<<10; size >= 1024; i++ {
		err := os.WriteFile(filepath.Join(in.dir, fmt.Sprintf("filler-%d", i)), make([]byte, size), 0o600)
		if err != nil {
			size /= 2
		}
	}
	if free := freeBytes(in.t, in.dir); free > 64<<10 {
		in.t.Fatalf("the file system still has %d bytes free", free)
	}
}

// unfill frees what fill took: the file of the container's root and the
// fillers.
func (in *instance) unfill(name string) {
	in.t.Helper()
	fillers, _ := filepath.Glob(filepath.Join(in.dir, "filler-*"))
	for _, f := range append(fillers, filepath.Join(in.store.RootFS(name), "fill")) {
		if err := os.Remove(f); err != nil {
			in.t.Fatal(err)
		}
	}
}

// noSpaceError checks that a command that failed on the full file system
// says so on one line, with what to do.
func noSpaceError(t *testing.T, what string, r result) {
	t.Helper()
	msg := strings.TrimSpace(r.stderr)
	t.Logf("%s on a full file system: %s", what, msg)
	if i := strings.LastIndex(msg, "\nnixcell: "); i >= 0 {
		msg = msg[i+1:] // warnings of what was undone come before
	}
	if r.code != 1 || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "nixcell: ") ||
		!strings.Contains(msg, "no space left") || !strings.Contains(msg, "free space") {
		t.Errorf("%s on a full file system: %s; want one line saying no space is left and to free space", what, r)
	}
}

// TestDiskFull fills the state file system from inside a container and
// checks every command: stop works, update, start and create fail cleanly
// (or work), leaving nothing half-made, and succeed once space is back;
// destroy works on the full file system and frees its space.
func TestDiskFull(t *testing.T) {
	in := newInstanceIn(t, smallFS(t, 96))
	name, other := testutil.Name("full"), testutil.Name("late")
	in.create(name, `{ system.fixture.label = "full-one"; }`)
	in.must("start", name)
	in.fill(name)

	// Reading needs no space.
	if i := in.info(name); i.State != "running" || i.Generation != 1 {
		t.Fatalf("state on a full file system: %+v", i)
	}
	in.must("list")

	// update: fails, leaving the container as it was, or works.
	// From a file: an inline configuration fails as soon as it is written.
	updateArgs := append([]string{"update", name, nixFile(t, "two.nix", `{ system.fixture.label = "full-two"; }`)}, nixArgs...)
	updated := false
	if r := in.run(updateArgs...); r.code != 0 {
		noSpaceError(t, "update", r)
		if i := in.info(name); i.State != "running" || i.Generation != 1 {
			t.Errorf("after the failed update: %+v, want generation 1 running", i)
		}
	} else {
		updated = true
	}
	t.Logf("update on the full file system: %v", map[bool]string{true: "worked", false: "failed cleanly"}[updated])

	// create: fails and leaves nothing of the container.
	if r := in.run(append([]string{"create", other, "-c", `{ system.fixture.label = "late"; }`}, nixArgs...)...); r.code == 0 {
		t.Errorf("create on a full file system succeeded: %s", r)
	} else {
		noSpaceError(t, "create", r)
	}
	if _, err := os.Lstat(in.store.Dir(other)); err == nil {
		t.Errorf("the failed create left %s", in.store.Dir(other))
	}
	if r := in.run("exists", other); r.code != 1 {
		t.Errorf("exists after the failed create: %s", r)
	}
	var list []info
	if err := json.Unmarshal([]byte(in.must("list", "--json")), &list); err != nil || len(list) != 1 || list[0].Name != name {
		t.Errorf("list after the failed create: %v %+v, want %s alone", err, list, name)
	}

	// stop: works.
	in.must("stop", "--timeout", "10s", name)
	if i := in.info(name); i.State != "stopped" {
		t.Fatalf("after stop on a full file system: %+v", i)
	}
	in.noLeftovers("after stop on a full file system")

	// start: fails cleanly, or works.
	started := false
	if r := in.run("start", name); r.code != 0 {
		noSpaceError(t, "start", r)
		if i := in.info(name); i.State != "stopped" {
			t.Errorf("after the failed start: %+v", i)
		}
		in.noLeftovers("after a failed start on a full file system")
	} else {
		started = true
	}
	t.Logf("start on the full file system: %v", map[bool]string{true: "worked", false: "failed cleanly"}[started])

	// Space back: every command that failed works when run again.
	in.unfill(name)
	if !started {
		in.must("start", name)
	}
	if !updated {
		in.must(updateArgs...)
	}
	if i := in.info(name); i.State != "running" || i.Generation != 2 {
		t.Errorf("after update and start with space back: %+v", i)
	}
	in.create(other, `{ system.fixture.label = "late"; }`)
	in.noLeftovers("with space back")

	// destroy of a running container on a full file system: works and
	// frees the space its root held.
	in.fill(name)
	in.must("destroy", "--timeout", "10s", name)
	if _, err := os.Lstat(in.store.Dir(name)); err == nil {
		t.Errorf("destroy left %s", in.store.Dir(name))
	}
	if free := freeBytes(t, in.dir); free < 32<<20 {
		t.Errorf("after destroy the file system has %d bytes free, want the container's root's back", free)
	}
	in.noLeftovers("after destroy on a full file system")
	in.must("destroy", other)
}
