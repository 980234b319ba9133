package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// owner returns "UID:GID" of a host path.
func owner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// TestDevContents checks the /dev a container gets (staged on the host's
// side and bound whole): the standard nodes work, the usual links and
// mounts are there, and its root owns it and /dev/shm.
func TestDevContents(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("dev")
	in.create(name, `{ }`)
	in.must("start", name)
	script := `set -e
echo x > /dev/null
test "$(head -c 3 /dev/zero | wc -c)" = 3
test "$(head -c 3 /dev/urandom | wc -c)" = 3
test "$(head -c 3 /dev/random | wc -c)" = 3
! echo x 2>/dev/null > /dev/full
test -c /dev/tty
test "$(readlink /dev/fd)" = /proc/self/fd
test "$(readlink /dev/stdin)" = /proc/self/fd/0
test "$(readlink /dev/ptmx)" = pts/ptmx
test -c /dev/pts/ptmx
test -c /dev/console
test "$(stat -c %u:%a /dev)" = 0:755
test "$(stat -c %u:%a /dev/shm)" = 0:1777
mkdir /dev/mine && rmdir /dev/mine
echo shared > /dev/shm/f && rm /dev/shm/f
grep -q " /dev/mqueue mqueue " /proc/mounts
grep -q " /dev/pts devpts " /proc/mounts
echo ok`
	if out := in.exec(name, "sh", "-c", script); strings.TrimSpace(out) != "ok" {
		t.Errorf("/dev inside: %q", out)
	}
}

// TestBindMounts checks bindMounts and tmpfs: a read-write bind is a
// plain bind (the container's IDs are its range's on the host; the
// ownership cases, writeAsHostRoot among them, are TestBindOwnership's),
// read-only ones are read-only, create makes a missing host path for the
// container's root, and the container's own root is not idmapped.
func TestBindMounts(t *testing.T) {
	in := newInstance(t)
	host := t.TempDir()
	rw, ro, made := filepath.Join(host, "rw"), filepath.Join(host, "ro"), filepath.Join(host, "made", "deep")
	for _, d := range []string{rw, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ro, "readme"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := testutil.Name("binds")
	r := in.run(append([]string{"create", name, nixFile(t, "binds.nix", fmt.Sprintf(`{
  bindMounts."/data" = { hostPath = "%s"; isReadOnly = false; };
  bindMounts."/ro" = { hostPath = "%s"; };
  bindMounts."/made" = { hostPath = "%s"; isReadOnly = false; create = true; };
  tmpfs = [ "/var/cache" ];
  configuration = { };
}`, rw, ro, made))}, nixArgs...)...)
	if r.code != 0 {
		t.Fatalf("create: %s", r)
	}
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("create warns: %s", r.stderr)
	}
	if _, err := os.Stat(made); err == nil {
		t.Fatalf("%s exists before the first start", made)
	}
	ids := in.info(name).IDs
	range0 := fmt.Sprintf("%d:%d", ids.Start, ids.Start)
	// The administrator gives the directory to the container's root.
	if err := os.Chown(rw, int(ids.Start), int(ids.Start)); err != nil {
		t.Fatal(err)
	}
	in.must("start", name)

	t.Run("root-writes-as-its-range", func(t *testing.T) {
		if got := in.exec(name, "stat", "-c", "%u:%g", "/data"); got != "0:0\n" {
			t.Errorf("/data, owned by the range's first ID on the host, is %q inside, want 0:0", got)
		}
		in.exec(name, "sh", "-c", "echo inside > /data/by-container-root && mkdir /data/dir")
		for _, p := range []string{"by-container-root", "dir"} {
			if got := owner(t, filepath.Join(rw, p)); got != range0 {
				t.Errorf("%s written by the container's root is owned by %s on the host, want %s", p, got, range0)
			}
		}
	})
	t.Run("own-root-is-not-idmapped", func(t *testing.T) {
		in.exec(name, "touch", "/root/mine")
		if got := owner(t, filepath.Join(in.store.RootFS(name), "root", "mine")); got != range0 {
			t.Errorf("a file the container's root wrote in its root is owned by %s on the host, want %s (the range's first ID)", got, range0)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		if got := in.exec(name, "cat", "/ro/readme"); got != "from the host\n" {
			t.Errorf("/ro/readme = %q", got)
		}
		r := in.run("exec", name, "--", "touch", "/ro/new")
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("writing to a read-only bind: %s", r)
		}
		if r := in.run("exec", name, "--", "mount", "-o", "remount,bind,rw", "/ro"); r.code == 0 {
			t.Errorf("the container remounted a read-only bind read-write: %s", r)
		}
		if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
			t.Error("the write went through to the host")
		}
	})
	t.Run("create", func(t *testing.T) {
		fi, err := os.Stat(made)
		if err != nil {
			t.Fatalf("create = true did not make the host path: %v", err)
		}
		if fi.Mode().Perm() != 0o755 || owner(t, made) != range0 {
			t.Errorf("made %s with mode %v, owner %s; want 0755, %s", made, fi.Mode().Perm(), owner(t, made), range0)
		}
		if got := owner(t, filepath.Dir(made)); got != "0:0" {
			t.Errorf("made the parent %s owned by %s, want the host's root", filepath.Dir(made), got)
		}
		if got := in.exec(name, "stat", "-c", "%u:%g %a", "/made"); got != "0:0 755\n" {
			t.Errorf("/made inside: %q", got)
		}
	})
	t.Run("tmpfs", func(t *testing.T) {
		if mounts := in.exec(name, "cat", "/proc/mounts"); !strings.Contains(mounts, " /var/cache tmpfs ") {
			t.Errorf("no tmpfs at /var/cache:\n%s", mounts)
		}
	})
	in.must("stop", name)
	if _, err := os.Stat(filepath.Join(rw, "by-container-root")); err != nil {
		t.Errorf("the bind mount's file is gone after stop: %v", err)
	}
}

// TestBindMountMissingPath starts a container whose bind mount's host path
// does not exist: a clear error, nothing left behind, and a start once the
// path exists.
func TestBindMountMissingPath(t *testing.T) {
	in := newInstance(t)
	missing := filepath.Join(t.TempDir(), "srv", "data")
	name := testutil.Name("missing")
	in.create(name, fmt.Sprintf(`{ bindMounts."/data" = { hostPath = "%s"; isReadOnly = false; }; configuration = { }; }`, missing))
	r := in.run("start", name)
	want := fmt.Sprintf("nixcell: start %s: bind mount /data: host path %s does not exist; create it or set create = true\n", name, missing)
	if r.code != 1 || r.stderr != want {
		t.Errorf("start: %s\nwant stderr %q", r, want)
	}
	if st := in.info(name).State; st != "stopped" {
		t.Errorf("state after the failed start: %s", st)
	}
	if leaks := in.leaks(); len(leaks) > 0 {
		t.Errorf("the failed start left %v", leaks)
	}
	if err := os.MkdirAll(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	in.must("start", name)
}

// TestEphemeral checks that an ephemeral container's root starts fresh at
// every start, whether it was stopped, killed or its init exited, while
// its bind mounts keep what it wrote.
func TestEphemeral(t *testing.T) {
	in := newInstance(t)
	keep := t.TempDir()
	name := testutil.Name("eph")
	in.create(name, fmt.Sprintf(`{
  ephemeral = true;
  bindMounts."/keep" = { hostPath = "%s/keep"; isReadOnly = false; create = true; };
  configuration = { services.httpd.enable = true; };
}`, keep))
	keep = filepath.Join(keep, "keep")
	persistent := in.store.RootFS(name)

	for _, how := range []string{"stop", "terminate"} {
		in.must("start", name)
		in.exec(name, "sh", "-c", "echo gone > /root/gone && echo kept > /keep/kept-after-"+how)
		if _, err := os.Stat(filepath.Join(persistent, "root", "gone")); err == nil {
			t.Fatalf("the write reached the persistent root %s", persistent)
		}
		in.must(how, name)
		if leaks := in.leaks(); len(leaks) > 0 {
			t.Errorf("after %s: %v", how, leaks)
		}
		in.must("start", name)
		if r := in.run("exec", name, "--", "test", "-e", "/root/gone"); r.code != 1 {
			t.Errorf("after %s and start, /root/gone is still there: %s", how, r)
		}
		if got := in.exec(name, "cat", "/keep/kept-after-"+how); got != "kept\n" {
			t.Errorf("after %s and start, the bind mount's file holds %q", how, got)
		}
		// The fixture's log lives in the root: one boot in it.
		if n := strings.Count(in.exec(name, "cat", "/var/log/nixcell-fixture.log"), "start label="); n != 1 {
			t.Errorf("after %s and start, the root's log shows %d boots, want 1", how, n)
		}
		in.must("stop", name)
	}

	// An init that exits on its own: the next start is fresh too.
	brief := testutil.Name("ephbrief")
	in.create(brief, `{ ephemeral = true; configuration = { system.fixture.exitAfter = 1; }; }`)
	in.must("start", brief)
	in.exec(brief, "touch", "/root/gone")
	waitFor(t, 20*time.Second, "the init to exit on its own", func() bool { return in.run("state", brief).code == 3 })
	in.must("start", brief)
	if r := in.run("exec", brief, "--", "test", "-e", "/root/gone"); r.code != 1 {
		t.Errorf("after the init exited and a start, /root/gone is still there: %s", r)
	}
}

// storeNames lists the names in a /nix/store listing, sorted.
func storeNames(listing string) []string {
	names := strings.Fields(listing)
	sort.Strings(names)
	return names
}

// TestClosureStore checks store = "closure": the container sees exactly
// its system's closure, read-only and root-owned, and works; an update of
// the running container restarts it into the new closure.
func TestClosureStore(t *testing.T) {
	in := newInstance(t)
	outside := prebuilt(t, `{ system.fixture.label = "not-in-the-closure"; }`)
	name := testutil.Name("closure")
	config := `{ store = "closure"; configuration = { services.httpd.enable = true; system.fixture.label = "%s"; }; }`
	in.create(name, fmt.Sprintf(config, "one"))
	// create made the view's mount points, so the first start takes no
	// longer than the next ones.
	if views, err := os.ReadDir(in.store.ClosureViewDir(name)); err != nil || len(views) != 1 {
		t.Errorf("closure views after create: %v, %v; want one", views, err)
	}
	in.must("start", name)
	in.waitHTTP(name, "hello from "+name+"\n")
	system := in.info(name).System

	closure := func(system string) []string {
		out, err := exec.Command("nix-store", "-qR", system).Output()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range strings.Fields(string(out)) {
			names = append(names, filepath.Base(p))
		}
		sort.Strings(names)
		return names
	}
	if got, want := storeNames(in.exec(name, "ls", "/nix/store")), closure(system); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("/nix/store inside holds\n%v\nwant the closure\n%v", got, want)
	}
	if r := in.run("exec", name, "--", "test", "-e", outside); r.code != 1 {
		t.Errorf("%s, outside the closure, is visible inside: %s", outside, r)
	}
	if got := in.exec(name, "stat", "-c", "%u:%g", "/nix/store", system); got != "0:0\n0:0\n" {
		t.Errorf("owners of /nix/store and the system inside: %q, want root's", got)
	}
	for _, p := range []string{"/nix/store/new", system + "/new"} {
		if r := in.run("exec", name, "--", "touch", p); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("touch %s: %s", p, r)
		}
	}

	r := in.run(append([]string{"update", name, nixFile(t, "two.nix", fmt.Sprintf(config, "two"))}, nixArgs...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "cannot switch in place") {
		t.Fatalf("update: %s", r)
	}
	i := in.info(name)
	if i.State != "running" || i.Generation != 2 {
		t.Fatalf("after update: %+v", i)
	}
	if got := in.label(name); got != "two" {
		t.Errorf("label after update = %q", got)
	}
	if got, want := storeNames(in.exec(name, "ls", "/nix/store")), closure(i.System); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after update /nix/store inside holds %v, want %v", got, want)
	}
	// The mount points are kept between starts, one view for the system
	// it runs: the first system's went with the update's restart.
	if views, err := os.ReadDir(in.store.ClosureViewDir(name)); err != nil || len(views) != 1 {
		t.Errorf("closure views kept: %v, %v; want the current system's alone", views, err)
	}
}

// TestHostInterface checks what the container gets from the host besides
// its mounts: $NOTIFY_SOCKET and start --wait with an init that never
// reports readiness, $container_uuid and /run/host, and its delegated
// cgroup2 hierarchy.
func TestHostInterface(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("iface")
	in.create(name, `{ }`)
	start := time.Now()
	r := in.run("start", "--wait", "--timeout", "30s", name)
	took := time.Since(start)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("start --wait: %s", r)
	}
	if took > 5*time.Second {
		t.Errorf("start --wait took %v for an init that never reports readiness; want it to return once the init runs", took)
	}
	if st := in.info(name).State; st != "running" {
		t.Errorf("state after start --wait: %s", st)
	}
	if r := in.run("start", "--timeout", "5s", name); r.code != 2 || !strings.Contains(r.stderr, "--timeout goes with --wait") {
		t.Errorf("start --timeout without --wait: %s", r)
	}

	environ := in.exec(name, "cat", "/run/nixcell-fixture/environ")
	uuid := strings.TrimSpace(in.exec(name, "cat", "/run/host/container-uuid"))
	for _, want := range []string{"NOTIFY_SOCKET=/run/host/notify", "container=nixcell", "container_uuid=" + uuid} {
		if !strings.Contains(environ, want+"\n") {
			t.Errorf("the init's environment lacks %s:\n%s", want, environ)
		}
	}
	if len(uuid) != 36 {
		t.Errorf("container UUID %q", uuid)
	}
	hostRelease, _ := os.ReadFile("/etc/os-release")
	if got := in.exec(name, "cat", "/run/host/os-release"); got != string(hostRelease) {
		t.Errorf("/run/host/os-release = %q", got)
	}
	if got := in.exec(name, "cat", "/run/host/container-manager"); got != "nixcell\n" {
		t.Errorf("/run/host/container-manager = %q", got)
	}
	if r := in.run("exec", name, "--", "touch", "/run/host/x"); r.code == 0 {
		t.Errorf("/run/host is writable: %s", r)
	}

	t.Run("cgroup-delegation", func(t *testing.T) {
		mounts := in.exec(name, "cat", "/proc/mounts")
		if !strings.Contains(mounts, "cgroup2 /sys/fs/cgroup cgroup2 rw") {
			t.Fatalf("no writable cgroup2 at /sys/fs/cgroup:\n%s", mounts)
		}
		if got := in.exec(name, "stat", "-c", "%u:%g", "/sys/fs/cgroup", "/sys/fs/cgroup/cgroup.procs"); got != "0:0\n0:0\n" {
			t.Errorf("the container's cgroup is owned by %q inside, want its root", got)
		}
		// The container's root can manage its subtree: make a cgroup and
		// move a process into it.
		if got := in.exec(name, "sh", "-c", "mkdir /sys/fs/cgroup/sub && echo $$ > /sys/fs/cgroup/sub/cgroup.procs && cat /proc/self/cgroup"); !strings.Contains(got, "0::/sub\n") {
			t.Errorf("a process moved into /sub is in:\n%s", got)
		}
		ids := in.info(name).IDs
		for _, mnt := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
			var st syscall.Statfs_t
			if syscall.Statfs(mnt, &st) != nil || st.Type != 0x63677270 { // CGROUP2_SUPER_MAGIC
				continue
			}
			dir := in.cgroupDir(name, "")
			if got, want := owner(t, dir), fmt.Sprintf("%d:%d", ids.Start, ids.Start); got != want {
				t.Errorf("%s is owned by %s on the host, want %s", dir, got, want)
			}
			break
		}
	})

	t.Run("exec-killed-by-signal", func(t *testing.T) {
		if r := in.run("exec", name, "--", "sh", "-c", "kill -9 $$"); r.code != 137 {
			t.Errorf("exec of a command killed by SIGKILL: %s, want exit 137", r)
		}
	})

	in.must("restart", name)
	if got := strings.TrimSpace(in.exec(name, "cat", "/run/host/container-uuid")); got != uuid {
		t.Errorf("container UUID changed across a restart: %s, then %s", uuid, got)
	}
}

// busyboxRoot makes a small plain root file system: the host's static
// busybox and an init that logs its start and exits on SIGRTMIN+3.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	testutil.RequiresCommands(t, "busybox")
	dir := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "sbin", "etc", "root", "var/log", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(dir, "bin", "busybox"), "--install", "-s", filepath.Join(dir, "bin")).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v\n%s", err, out)
	}
	// Applets link to the busybox path given; make them relative.
	entries, _ := os.ReadDir(filepath.Join(dir, "bin"))
	for _, e := range entries {
		if e.Name() != "busybox" {
			p := filepath.Join(dir, "bin", e.Name())
			_ = os.Remove(p)
			_ = os.Symlink("busybox", p)
		}
	}
	init := `#!/bin/sh
echo "start pid=$$" >> /var/log/init.log
trap 'echo stop >> /var/log/init.log; exit 0' 37
touch /run/ready
while :; do sleep 1 & wait; done
`
	if err := os.WriteFile(filepath.Join(dir, "sbin", "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPlainRootFS runs a plain directory tree owned by the host's root
// (create --rootfs): it is idmapped as the container's root, has no
// generations, and survives destroy.
func TestPlainRootFS(t *testing.T) {
	in := newInstance(t)
	dir := busyboxRoot(t)
	name := testutil.Name("plain")
	if r := in.run("create", name, "--init", "/sbin/init"); r.code != 2 || !strings.Contains(r.stderr, "--init goes with --rootfs") {
		t.Errorf("create --init without --rootfs: %s", r)
	}
	if r := in.run("create", name, "--rootfs", dir, "--init", "/sbin/nope"); r.code != 1 || !strings.Contains(r.stderr, "init /sbin/nope not found in "+dir) {
		t.Errorf("create with a missing init: %s", r)
	}
	in.must("create", name, "--rootfs", dir, "--init", "/sbin/init")
	if list := in.must("list"); !regexpLine(list, name+`\s+stopped\s+-\s`) {
		t.Errorf("list does not show %s without a generation:\n%s", name, list)
	}
	in.must("start", "--wait", name)
	ids := in.info(name).IDs

	if got := in.exec(name, "stat", "-c", "%u:%g", "/", "/bin/busybox"); got != "0:0\n0:0\n" {
		t.Errorf("the host root's files appear owned by %q inside, want 0:0", got)
	}
	in.exec(name, "sh", "-c", "echo inside > /root/written")
	if got := owner(t, filepath.Join(dir, "root", "written")); got != "0:0" {
		t.Errorf("a file the container's root wrote is owned by %s on the host, want 0:0", got)
	}
	if ids == nil || ids.Start == 0 {
		t.Errorf("a plain root container is unprivileged too: %+v", ids)
	}
	if r := in.run("exec", name, "--", "test", "-e", "/nix/store"); r.code != 1 {
		t.Errorf("a plain root container sees /nix/store: %s", r)
	}
	for _, args := range [][]string{{"rollback", name}, {"list-generations", name}} {
		r := in.run(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "nixcell: "+args[0]+" "+name+": does not apply: it boots the plain root file system "+dir) {
			t.Errorf("%v: %s", args, r)
		}
	}
	if r := in.run("stop", "--timeout", "20s", name); r.code != 0 || r.stderr != "" {
		t.Errorf("stop: %s", r)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "var", "log", "init.log")); !strings.HasSuffix(string(log), "stop\n") {
		t.Errorf("the init's log: %q", log)
	}
	in.must("destroy", name)
	if _, err := os.Stat(filepath.Join(dir, "root", "written")); err != nil {
		t.Errorf("destroy removed the root file system's content: %v", err)
	}
}

// regexpLine tells whether a line of text matches the regular expression.
func regexpLine(text, expr string) bool {
	return regexp.MustCompile(`(?m)^` + expr).MatchString(text)
}
