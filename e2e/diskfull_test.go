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

// A kind of small file system for a test: how it is made and mounted.
type fsKind struct {
	name  string
	size  int        // MiB
	mkfs  []string   // the command, before the image's path
	opts  string     // mount options
	after [][]string // commands run on the mount point (appended) once mounted
}

var (
	// -m 0: no blocks reserved for root, so that the file system the
	// container fills is full for nixcell too.
	plainExt4  = fsKind{name: "ext4", size: 96, mkfs: []string{"mkfs.ext4", "-q", "-F", "-m", "0"}}
	quotaExt4  = fsKind{name: "ext4 with project quotas", size: 256, mkfs: []string{"mkfs.ext4", "-q", "-F", "-O", "project,quota"}, opts: "prjquota"}
	quotaBtrfs = fsKind{name: "btrfs with quotas", size: 256, mkfs: []string{"mkfs.btrfs", "-q", "-f"},
		after: [][]string{{"btrfs", "quota", "enable"}}}
)

// smallFS makes a file system of kind k in an image file, mounts it
// through a loop device and returns a state directory on it; it is
// unmounted and its loop device detached when the test ends, whether it
// passed or not. The state directory is below the mount point, so that
// the harness's check for leftover mounts of the instance does not take
// the file system itself for one. It returns "" and why when the kernel
// cannot mount it.
func smallFS(t *testing.T, k fsKind) (string, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, k.mkfs[0], "losetup", "mount", "umount")
	dir, err := os.MkdirTemp("", "nixcell-test-fs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) }) // runs last: after the unmount
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(k.size)<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(k.mkfs[0], append(k.mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", k.mkfs[0], err, out)
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
	args := []string{dev, dir}
	if k.opts != "" {
		args = append([]string{"-o", k.opts}, args...)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		// The kernel says why in its log, on a line naming the device.
		dmesg, _ := exec.Command("dmesg").Output()
		why := ""
		for _, line := range strings.Split(string(dmesg), "\n") {
			if strings.Contains(line, filepath.Base(dev)+")") {
				why = line
			}
		}
		return "", fmt.Sprintf("mount %s: %v: %s (kernel: %s)", k.name, err, strings.TrimSpace(string(out)), why)
	}
	for _, c := range k.after {
		if out, err := exec.Command(c[0], append(c[1:], dir)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o711); err != nil {
		t.Fatal(err)
	}
	return state, ""
}

// mustSmallFS is smallFS for a kind every host here mounts.
func mustSmallFS(t *testing.T, k fsKind) string {
	t.Helper()
	dir, why := smallFS(t, k)
	if dir == "" {
		t.Fatal(why)
	}
	return dir
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
	in := newInstanceIn(t, mustSmallFS(t, plainExt4))
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

// TestDiskQuota: limits.disk caps what a container's root takes of the
// state file system while the file system has room, update changes it,
// destroy removes it; a file system without quotas refuses it at create
// and update. It runs on ext4 with project quotas where the kernel mounts
// that (CONFIG_QFMT_V2), else on btrfs with quotas.
func TestDiskQuota(t *testing.T) {
	t.Run("refused-without-quotas", func(t *testing.T) {
		in := newInstanceIn(t, mustSmallFS(t, plainExt4))
		name := testutil.Name("noquota")
		r := in.run(append([]string{"create", name, "--disk", "8M", "-c", `{ system.fixture.label = "noquota"; }`}, nixArgs...)...)
		msg := strings.TrimSpace(r.stderr)
		if r.code == 0 || !strings.Contains(msg, "ext4") || !strings.Contains(msg, "prjquota") || !strings.Contains(msg, "limits.disk") {
			t.Errorf("create --disk on ext4 without project quotas: %s; want a refusal naming ext4 and what it needs", r)
		}
		if _, err := os.Lstat(in.store.Dir(name)); err == nil {
			t.Errorf("the refused create left %s", in.store.Dir(name))
		}
		in.noLeftovers("after the refused create")
		in.create(name, `{ system.fixture.label = "noquota"; }`)
		if r := in.run("update", name, "--disk", "8M"); r.code == 0 || !strings.Contains(r.stderr, "prjquota") {
			t.Errorf("update --disk on ext4 without project quotas: %s", r)
		}
		if i := in.info(name); i.Limits.DiskBytes != 0 {
			t.Errorf("after the refused update: limits %+v", i.Limits)
		}
	})

	dir, why := smallFS(t, quotaExt4)
	if dir == "" {
		t.Logf("ext4 project quotas: %s; using btrfs", why)
		testutil.RequiresCommands(t, "mkfs.btrfs", "btrfs")
		dir = mustSmallFS(t, quotaBtrfs)
	}
	in := newInstanceIn(t, dir)
	name := testutil.Name("quota")
	config := nixFile(t, "quota.nix", `{ limits.disk = "8M"; configuration = { system.fixture.label = "quota"; }; }`)
	in.must(append([]string{"create", name, config}, nixArgs...)...)
	if i := in.info(name); i.Limits.DiskBytes != 8<<20 {
		t.Errorf("state --json: limits %+v, want diskBytes %d", i.Limits, 8<<20)
	}
	in.must("start", name)
	write := func(file string, mib int) result {
		return in.run("exec", name, "--", "dd", "if=/dev/zero", "of="+file, "bs=1M", fmt.Sprint("count=", mib), "conv=fsync")
	}
	size := func(file string) int64 {
		fi, err := os.Stat(filepath.Join(in.store.RootFS(name), file))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	// 16 MiB do not fit in 8, though the file system has room.
	if free := freeBytes(t, in.dir); free < 64<<20 {
		t.Fatalf("the file system has only %d bytes free", free)
	}
	if r := write("/big", 16); r.code == 0 || !strings.Contains(r.stderr, "Disk quota exceeded") {
		t.Errorf("writing 16 MiB under limits.disk = 8M: %s; want Disk quota exceeded", r)
	}
	if got := size("big"); got > 8<<20 {
		t.Errorf("%d bytes written under limits.disk = 8M", got)
	}
	if free := freeBytes(t, in.dir); free < 64<<20 {
		t.Errorf("the file system has only %d bytes free: the quota, not the file system, should have stopped the write", free)
	}

	// update raises it, live: the write goes through.
	in.must("update", name, "--disk", "64M")
	if i := in.info(name); i.Limits.DiskBytes != 64<<20 || i.State != "running" {
		t.Errorf("after update --disk 64M: %+v", i)
	}
	if r := write("/big", 16); r.code != 0 {
		t.Errorf("writing 16 MiB under limits.disk = 64M: %s", r)
	}
	if got := size("big"); got != 16<<20 {
		t.Errorf("%d bytes written, want %d", got, 16<<20)
	}
	// max removes it.
	in.must("update", name, "--disk", "max")
	if r := write("/bigger", 80); r.code != 0 {
		t.Errorf("writing 80 MiB without limits.disk: %s", r)
	}

	// A limit below what the root holds stops every write; the roots that
	// replace or copy it (restore, clone, import) have it too.
	in.must("update", name, "--disk", "8M")
	if r := in.run("exec", name, "--", "sh", "-c", "echo x > /more"); r.code == 0 || !strings.Contains(r.stderr, "Disk quota exceeded") {
		t.Errorf("writing over limits.disk = 8M with 96 MiB held: %s", r)
	}
	in.exec(name, "rm", "/bigger")
	in.must("update", name, "--disk", "24M")
	in.must("stop", name)
	in.must("snapshot", name, "s")
	for _, c := range []struct {
		what string
		make func() string
	}{
		{"restore", func() string { in.must("restore", name, "s"); return name }},
		{"clone", func() string {
			clone := testutil.Name("qclone")
			in.must("clone", name, clone)
			return clone
		}},
		{"import", func() string {
			file := filepath.Join(t.TempDir(), "q.tar.gz")
			in.must("export", name, "-o", file)
			imported := testutil.Name("qimp")
			in.must("import", file, imported)
			return imported
		}},
	} {
		c := c.make()
		if i := in.info(c); i.Limits.DiskBytes != 24<<20 {
			t.Errorf("after %s: limits %+v, want diskBytes %d", c, i.Limits, 24<<20)
		}
		in.must("start", c)
		r := in.run("exec", c, "--", "dd", "if=/dev/zero", "of=/more", "bs=1M", "count=32", "conv=fsync")
		if r.code == 0 || !strings.Contains(r.stderr, "Disk quota exceeded") {
			t.Errorf("after %s: writing 32 MiB under limits.disk = 24M: %s", c, r)
		}
		if c != name {
			in.must("destroy", c)
		} else {
			in.exec(c, "rm", "/more") // what fitted: the next copies are of this root
			in.must("stop", c)
		}
	}

	// destroy removes the quota with the root: a container of the same
	// name starts with the limit of its own configuration.
	in.must("destroy", name)
	if _, err := os.Lstat(in.store.Dir(name)); err == nil {
		t.Errorf("destroy left %s", in.store.Dir(name))
	}
	in.create(name, `{ system.fixture.label = "quota-again"; }`)
	in.must("start", name)
	if r := write("/big", 32); r.code != 0 {
		t.Errorf("writing 32 MiB in the new container without limits.disk: %s", r)
	}
	in.noLeftovers("after the quota test")
}
