package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/testutil"
)

// Tests of copies, snapshots and moves (issue 15): clone, snapshot and
// restore, export and import, each on real containers.

// httpFrom fetches the page a container serves on its address, from the
// host.
func httpFrom(t *testing.T, addr string) string {
	t.Helper()
	// In Go, not the host's wget: a test host need not have one (the
	// systemd guest has none).
	var body string
	var err error
	waitFor(t, 20*time.Second, "http://"+addr+"/ to answer", func() bool {
		body, err = httpGet(t, "", net.JoinHostPort(addr, "80"))
		return err == nil
	})
	return body
}

// ownedIn fails the test unless every file below dir belongs to the range
// starting at start, both user and group.
func ownedIn(t *testing.T, dir string, start uint32) {
	t.Helper()
	bad := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Uid < start || st.Uid >= start+65536 || st.Gid < start || st.Gid >= start+65536 {
			if bad++; bad < 5 {
				t.Errorf("%s is owned by %d:%d, outside the range %d-%d", p, st.Uid, st.Gid, start, start+65535)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// capability is a revision 3 file capability (CAP_NET_BIND_SERVICE) of the
// user namespace whose root is rootid on the host, as the container's root
// writes it with setcap.
func capability(rootid uint32) []byte {
	v := make([]byte, 24)
	binary.LittleEndian.PutUint32(v, 0x03000001)
	binary.LittleEndian.PutUint32(v[4:], 1<<10)
	binary.LittleEndian.PutUint32(v[20:], rootid)
	return v
}

// plantFiles gives a running container what a copy must carry: data, a
// setuid program, a file of an ordinary user, a file capability.
func (in *instance) plantFiles(name, data string) {
	in.t.Helper()
	in.exec(name, "sh", "-c", fmt.Sprintf(`echo %s > /var/lib/data &&
cp "$(readlink -f /bin/sh)" /usr/bin/suid && chmod 4755 /usr/bin/suid &&
echo mine > /var/lib/user-file && chown 1000:100 /var/lib/user-file &&
echo ping > /usr/bin/ping`, data))
	start := in.info(name).IDs.Start
	if err := unix.Lsetxattr(filepath.Join(in.store.RootFS(name), "usr/bin/ping"), "security.capability", capability(start), 0); err != nil {
		in.t.Fatal(err)
	}
}

// checkPlanted checks, from the host and inside, what plantFiles made in a
// container whose range starts at start.
func (in *instance) checkPlanted(name, data string) {
	in.t.Helper()
	start := in.info(name).IDs.Start
	if got := in.exec(name, "cat", "/var/lib/data"); got != data+"\n" {
		in.t.Errorf("%s: /var/lib/data holds %q, want %q", name, got, data)
	}
	if got := in.exec(name, "stat", "-c", "%u:%g %a", "/var/lib/user-file", "/usr/bin/suid"); got != "1000:100 644\n0:0 4755\n" {
		in.t.Errorf("%s: owners and modes inside are\n%s", name, got)
	}
	suid := filepath.Join(in.store.RootFS(name), "usr/bin/suid")
	if got := owner(in.t, suid); got != fmt.Sprintf("%d:%d", start, start) {
		in.t.Errorf("%s: %s is owned by %s on the host, want the range's root %d", name, suid, got, start)
	}
	var st unix.Stat_t
	if err := unix.Lstat(suid, &st); err != nil || st.Mode&unix.S_ISUID == 0 {
		in.t.Errorf("%s: the setuid bit of %s did not survive: mode %o (%v)", name, suid, st.Mode, err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(in.store.RootFS(name), "usr/bin/ping"), "security.capability", buf)
	if err != nil || !bytes.Equal(buf[:n], capability(start)) {
		in.t.Errorf("%s: the file capability of /usr/bin/ping is %x (%v), want one for its own root %d", name, buf[:n], err, start)
	}
	ownedIn(in.t, in.store.RootFS(name), start)
}

// TestCloneRunning clones a running container: the clone has the same
// generations and files, its own ID range (its files' owners shifted into
// it, setuid bits and file capabilities kept), its own addresses and no
// port forwards; both answer on their own addresses with the same service,
// and what one writes the other does not see. The source was frozen for
// the copy and runs on, thawed, with the same init.
func TestCloneRunning(t *testing.T) {
	in := newInstance(t)
	port := 22000 + freeSubnet(t, func(int) []string { return nil })
	src, dst := testutil.Name("src"), testutil.Name("dst")
	in.create(src, fmt.Sprintf(`{
  network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ];
  configuration = %s;
}`, port, labelled("one")))
	in.must(append([]string{"update", src, "-c", fmt.Sprintf(`{
  network.forwardPorts = [ { protocol = "tcp"; hostPort = %d; containerPort = 80; } ];
  configuration = %s;
}`, port, labelled("two"))}, nixArgs...)...)
	in.must("start", src)
	in.waitHTTP(src, "two\n")
	in.plantFiles(src, "from the source")
	before := in.info(src)

	r := in.run("clone", src, dst)
	if r.code != 0 {
		t.Fatalf("clone: %s", r)
	}
	for _, want := range []string{"has no port forwards", src + " is frozen while its files are copied", src + " thawed after"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("clone does not say %q: %s", want, r.stderr)
		}
	}
	if got := in.info(src); got.State != "running" || got.Pid != before.Pid {
		t.Errorf("the source after the clone: %+v, was %+v", got, before)
	}
	if got := in.cgroupFile(src, "freezer", "freezer.state", "cgroup.freeze"); got != "THAWED" && got != "0" {
		t.Errorf("the source's freezer is %s after the clone", got)
	}
	if got, want := in.numbers(dst), "1 2c"; got != want {
		t.Errorf("the clone's generations are %q, want %q", got, want)
	}
	srcGens, dstGens := in.generations(src), in.generations(dst)
	for i := range srcGens {
		if srcGens[i].System != dstGens[i].System {
			t.Errorf("generation %d: the clone's system %s, the source's %s", srcGens[i].Number, dstGens[i].System, srcGens[i].System)
		}
	}
	in.must("start", dst)
	a, b := in.info(src), in.info(dst)
	if a.IDs.Start == b.IDs.Start {
		t.Fatalf("the clone shares the ID range %d of its source", a.IDs.Start)
	}
	in.checkPlanted(dst, "from the source")

	var addrs [2]struct {
		IPv4 string `json:"ipv4"`
	}
	for i, n := range []string{src, dst} {
		if err := json.Unmarshal([]byte(in.must("show-ip", "--json", n)), &addrs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if addrs[0].IPv4 == addrs[1].IPv4 || addrs[1].IPv4 == "" {
		t.Fatalf("addresses: source %s, clone %s", addrs[0].IPv4, addrs[1].IPv4)
	}
	for _, addr := range []string{addrs[0].IPv4, addrs[1].IPv4} {
		if got := httpFrom(t, addr); got != "two\n" {
			t.Errorf("http://%s/ answers %q, want the service's two", addr, got)
		}
	}
	var net struct {
		Ports map[string]json.RawMessage `json:"ports"`
	}
	if data, err := os.ReadFile(in.store.NetworkPath()); err != nil || json.Unmarshal(data, &net) != nil {
		t.Fatalf("reading the network state: %v", err)
	}
	if _, ok := net.Ports[dst]; ok || net.Ports[src] == nil {
		t.Errorf("forwarded ports after the clone: %v", net.Ports)
	}

	in.exec(dst, "sh", "-c", "echo from the clone > /var/lib/data && touch /var/lib/only-in-clone")
	in.exec(src, "touch", "/var/lib/only-in-source")
	if got := in.exec(src, "cat", "/var/lib/data"); got != "from the source\n" {
		t.Errorf("the clone's write shows in the source: %q", got)
	}
	if r := in.run("exec", src, "--", "test", "-e", "/var/lib/only-in-clone"); r.code == 0 {
		t.Errorf("a file made in the clone is in the source")
	}
	if r := in.run("exec", dst, "--", "test", "-e", "/var/lib/only-in-source"); r.code == 0 {
		t.Errorf("a file made in the source is in the clone")
	}
	// A name that exists, and the source's own, are refused.
	if r := in.run("clone", src, dst); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("clone onto an existing container: %s", r)
	}
	if r := in.run("clone", src, src); r.code != 2 {
		t.Errorf("clone onto itself: %s", r)
	}
}

// TestSnapshotRestore: snapshot, then change files and the generation,
// then restore: the files and the generation are as at the snapshot, the
// running container restarted into them.
func TestSnapshotRestore(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("snap")
	in.create(name, labelled("one"))
	in.must("start", name)
	in.waitHTTP(name, "one\n")
	in.plantFiles(name, "before")
	one := in.info(name).System

	tag := strings.TrimSpace(in.must("snapshot", name))
	if tag != "snap0" {
		t.Errorf("the first snapshot's tag is %q, want snap0", tag)
	}
	in.must("snapshot", name, "second")
	if r := in.run("snapshot", name, "second"); r.code != 1 || !strings.Contains(r.stderr, "has a snapshot second already") {
		t.Errorf("a snapshot tag twice: %s", r)
	}
	in.must("delete-snapshot", name, "second")

	in.exec(name, "sh", "-c", "echo after > /var/lib/data && touch /var/lib/new && rm /usr/bin/suid")
	in.must(append([]string{"update", name, "-c", labelled("two")}, nixArgs...)...)
	in.waitHTTP(name, "two\n")

	var snaps []struct {
		Tag        string `json:"tag"`
		Generation int    `json:"generation"`
		System     string `json:"system"`
	}
	if err := json.Unmarshal([]byte(in.must("list-snapshots", "--json", name)), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Tag != "snap0" || snaps[0].Generation != 1 || snaps[0].System != one {
		t.Fatalf("list-snapshots: %+v", snaps)
	}

	r := in.run("restore", name, "snap0")
	if r.code != 0 || !strings.Contains(r.stderr, "new generation 3") || !strings.Contains(r.stderr, "restarted") {
		t.Fatalf("restore: %s", r)
	}
	if got := in.info(name); got.State != "running" || got.System != one || got.Generation != 3 {
		t.Errorf("after the restore: %+v, want running generation 3 = %s", got, one)
	}
	in.waitHTTP(name, "one\n")
	in.checkPlanted(name, "before")
	if r := in.run("exec", name, "--", "test", "-e", "/var/lib/new"); r.code == 0 {
		t.Errorf("a file made after the snapshot survived the restore")
	}
	if _, err := os.Lstat(filepath.Join(in.store.Dir(name), "root.restoring")); err == nil {
		t.Errorf("the restore left the replaced root")
	}
	// A stopped container restores without starting.
	in.must("stop", name)
	in.must("restore", name, "snap0")
	if got := in.info(name); got.State != "stopped" || got.Generation != 3 {
		t.Errorf("after restoring a stopped container: %+v", got)
	}
	if r := in.run("restore", name, "nosuch"); r.code != 1 || !strings.Contains(r.stderr, "no snapshot nosuch") {
		t.Errorf("restore of a missing snapshot: %s", r)
	}
}

// exportTo runs export in one instance into an import in another, through
// a pipe, as ssh would carry it.
func exportTo(t *testing.T, from *instance, name string, to *instance, args ...string) (result, result) {
	t.Helper()
	exp := from.cmd("export", name, "-o", "-")
	imp := to.cmd(append([]string{"import", "-"}, args...)...)
	pipe, err := exp.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	var expErr, impOut, impErr bytes.Buffer
	exp.Stderr, imp.Stdout, imp.Stderr = &expErr, &impOut, &impErr
	if err := exp.Start(); err != nil {
		t.Fatal(err)
	}
	ierr := imp.Run()
	eerr := exp.Wait()
	code := func(err error) int {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 0
	}
	return result{"", expErr.String(), code(eerr)}, result{impOut.String(), impErr.String(), code(ierr)}
}

// TestExportImport exports a running container from one instance and
// imports it into another (a second state directory), from a file and
// streamed: the service answers there with the same data, owned in a range
// of the importing instance. A corrupted or truncated archive is refused
// and changes nothing.
func TestExportImport(t *testing.T) {
	a, b := newInstance(t), newInstance(t)
	name := testutil.Name("exp")
	a.create(name, labelled("moved"))
	a.must("start", name)
	a.waitHTTP(name, "moved\n")
	a.plantFiles(name, "exported")

	file := filepath.Join(t.TempDir(), "c.nixcell.tar.gz")
	r := a.run("export", name, "-o", file)
	if r.code != 0 || !strings.Contains(r.stderr, name+" is frozen while its files are copied") {
		t.Fatalf("export: %s", r)
	}
	if a.info(name).State != "running" {
		t.Errorf("the exported container does not run on")
	}
	// Profiles are host-wide, so the copy on this host needs a name of its
	// own.
	moved := testutil.Name("imp")
	r = b.run("import", file, moved)
	if r.code != 0 {
		t.Fatalf("import: %s", r)
	}
	if !strings.Contains(r.stderr, "its address") {
		t.Errorf("import does not say what became of its address: %s", r.stderr)
	}
	b.must("start", moved)
	b.waitHTTP(moved, "moved\n")
	b.checkPlanted(moved, "exported")
	if got, want := b.info(moved).System, a.info(name).System; got != want {
		t.Errorf("the imported system is %s, want %s", got, want)
	}

	// Streamed, as export NAME -o - | ssh other nixcell import -.
	streamed := testutil.Name("imp")
	er, ir := exportTo(t, a, name, b, streamed)
	if er.code != 0 || ir.code != 0 {
		t.Fatalf("export | import: %s / %s", er, ir)
	}
	b.must("start", streamed)
	b.waitHTTP(streamed, "moved\n")
	b.checkPlanted(streamed, "exported")

	// Damaged archives change nothing.
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := b.ranges().All()
	for what, data := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"corrupted": func() []byte { d := bytes.Clone(good); d[len(d)/2] ^= 0x55; return d }(),
		"cut short": good[:len(good)-40],
	} {
		bad := filepath.Join(t.TempDir(), "bad.tar.gz")
		if err := os.WriteFile(bad, data, 0o600); err != nil {
			t.Fatal(err)
		}
		victim := testutil.Name("bad")
		r := b.run("import", bad, victim)
		if r.code != 1 || !strings.Contains(r.stderr, "corrupted archive") || !strings.Contains(r.stderr, "nothing was changed") {
			t.Errorf("import of a %s archive: %s", what, r)
		}
		b.expectTraces("a "+what+" import", victim)
		if after, _ := b.ranges().All(); len(after) != len(before) {
			t.Errorf("a %s import changed the ID ranges: %v, were %v", what, after, before)
		}
	}
}

// TestImportSignatures: store paths the importing host lacks are imported
// only with a signature by a key it trusts when its Nix requires
// signatures (require-sigs, the default).
func TestImportSignatures(t *testing.T) {
	in := newInstance(t)
	testutil.RequiresCommands(t, "nix")
	name := testutil.Name("sig")
	label := fmt.Sprintf("signed-%d", time.Now().UnixNano())
	in.create(name, labelled(label))
	system := in.info(name).System
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "nixcell-e2e-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	key, _ := os.ReadFile(pk)
	unsigned, signed := filepath.Join(dir, "unsigned.tar.gz"), filepath.Join(dir, "signed.tar.gz")
	in.must("export", name, "-o", unsigned)
	if out, err := exec.Command("nix", "--extra-experimental-features", "nix-command", "store", "sign", "--key-file", sk, system).CombinedOutput(); err != nil {
		t.Fatalf("nix store sign: %v: %s", err, out)
	}
	in.must("export", name, "-o", signed)
	in.must("destroy", name)
	if out, err := exec.Command("nix-store", "--delete", system).CombinedOutput(); err != nil {
		t.Fatalf("removing the system from the store: %v: %s", err, out)
	}
	if _, err := os.Stat(system); err == nil {
		t.Fatalf("%s is still in the store", system)
	}

	other := testutil.Name("sig")
	r := in.run("import", unsigned, other)
	if r.code != 1 || !strings.Contains(r.stderr, "has no signature by a key in trusted-public-keys") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Errorf("import of an unsigned closure: %s", r)
	}
	if _, err := os.Stat(system); err == nil {
		t.Errorf("the refused import added %s to the store", system)
	}
	in.expectTraces("a refused import", other)
	trusted := in.cmd("import", signed, other)
	trusted.Env = append(trusted.Env, "NIX_CONFIG=extra-trusted-public-keys = "+strings.TrimSpace(string(key)))
	if out, err := trusted.CombinedOutput(); err != nil {
		t.Fatalf("import of a closure signed by a trusted key: %v\n%s", err, out)
	}
	if got := in.info(other).System; got != system {
		t.Errorf("the imported container's system is %s, want %s", got, system)
	}
	in.must("start", other)
	in.waitHTTP(other, label+"\n")
	// Unsigned, but the host's store has it now: nothing to check.
	third := testutil.Name("sig")
	in.must("import", unsigned, third)
	// --no-check-sigs takes what no trusted key signed.
	in.must("destroy", other)
	in.must("destroy", third)
	if out, err := exec.Command("nix-store", "--delete", system).CombinedOutput(); err != nil {
		t.Fatalf("removing the system from the store: %v: %s", err, out)
	}
	in.must("import", "--no-check-sigs", unsigned, other)
	if _, err := os.Stat(filepath.Join(system, "init")); err != nil {
		t.Errorf("import --no-check-sigs did not add the system: %v", err)
	}
}

// TestImportHostAccess: an archive whose settings reach into the host (a
// privileged container, a bind mount of a host path) is refused unless
// --trust-settings says so: its checksum proves it whole, not who made
// it. The refusal names each such setting and changes nothing.
func TestImportHostAccess(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("acc")
	shared := t.TempDir()
	in.create(name, fmt.Sprintf(`{
  bindMounts."/shared" = { hostPath = "%s"; isReadOnly = false; };
  configuration = { system.fixture.label = "access"; };
}`, shared))
	archive := filepath.Join(t.TempDir(), "acc.nixcell.tar.gz")
	in.must("export", name, "-o", archive)
	before, _ := in.ranges().All()

	other := testutil.Name("acc")
	r := in.run("import", archive, other)
	if r.code != 1 || !strings.Contains(r.stderr, "a writable bind mount of the host's "+shared+" at /shared") || !strings.Contains(r.stderr, "--trust-settings") {
		t.Errorf("import of an archive with a bind mount of a host path: %s", r)
	}
	in.expectTraces("an import refused for its settings", other)
	if after, _ := in.ranges().All(); len(after) != len(before) {
		t.Errorf("the refused import changed the ID ranges: %v, were %v", after, before)
	}

	in.must("import", "--trust-settings", archive, other)
	if got := in.info(other).System; got != in.info(name).System {
		t.Errorf("the imported container's system is %s, want %s", got, in.info(name).System)
	}
	in.must("destroy", other)
}
