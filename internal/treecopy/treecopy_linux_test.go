package treecopy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/idxattr"
	"github.com/nixcell/nixcell/internal/testutil"
)

const (
	from = 1 << 20
	to   = 3 << 20
)

// capV3 is a revision 3 file capability (CAP_NET_BIND_SERVICE, effective)
// for the user namespace whose root is rootid.
// The attributes' layouts (linux/capability.h, linux/posix_acl_xattr.h).
const (
	capRevision2, capRevision3 = 0x02000000, 0x03000000
	capSize2, capSize3         = 20, 24
	aclHeaderSize              = 4
	aclEntrySize               = 8
	aclUser, aclGroup          = 0x02, 0x08
)

func capV3(rootid uint32) []byte {
	v := make([]byte, capSize3)
	binary.LittleEndian.PutUint32(v, capRevision3|1)
	binary.LittleEndian.PutUint32(v[4:], 1<<10)
	binary.LittleEndian.PutUint32(v[20:], rootid)
	return v
}

// acl is an access ACL with a named user and group.
func acl(user, group uint32) []byte {
	entries := []struct {
		tag uint16
		id  uint32
	}{{0x01, 0xffffffff}, {aclUser, user}, {0x04, 0xffffffff}, {aclGroup, group}, {0x10, 0xffffffff}, {0x20, 0xffffffff}}
	v := make([]byte, aclHeaderSize+aclEntrySize*len(entries))
	binary.LittleEndian.PutUint32(v, 2)
	for i, e := range entries {
		off := aclHeaderSize + i*aclEntrySize
		binary.LittleEndian.PutUint16(v[off:], e.tag)
		binary.LittleEndian.PutUint16(v[off+2:], 7)
		binary.LittleEndian.PutUint32(v[off+4:], e.id)
	}
	return v
}

// sourceTree makes a container-like tree owned by the range at from, with
// everything a copy must get right, and a victim outside it that links
// point at.
func sourceTree(t *testing.T) (src, victim string) {
	t.Helper()
	base := t.TempDir()
	src, victim = filepath.Join(base, "src"), filepath.Join(base, "victim")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(victim, []byte("the host's own\n"), 0o644))
	for _, d := range []string{"etc", "bin", "var/empty", "deep/a/b/c"} {
		must(os.MkdirAll(filepath.Join(src, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(src, "etc/hostname"), []byte("web\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "bin/su"), []byte("#!setuid\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "bin/ping"), []byte("#!caps\n"), 0o755))
	must(os.Link(filepath.Join(src, "bin/su"), filepath.Join(src, "deep/a/b/c/su-again")))
	must(os.Symlink(victim, filepath.Join(src, "etc/evil")))
	must(os.Symlink("../bin", filepath.Join(src, "etc/bin")))
	must(unix.Mkfifo(filepath.Join(src, "var/fifo"), 0o600))
	must(unix.Mknod(filepath.Join(src, "var/socket"), unix.S_IFSOCK|0o600, 0))
	sparse, err := os.Create(filepath.Join(src, "var/sparse"))
	must(err)
	_, err = sparse.WriteAt([]byte("end"), 64<<20)
	must(err)
	sparse.Close()
	must(filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, from+1000, from+100)
	}))
	must(os.Lchown(src, from, from))
	must(unix.Chmod(filepath.Join(src, "bin/su"), 0o4755))
	must(unix.Setxattr(filepath.Join(src, "bin/ping"), idxattr.Capability, capV3(from), 0))
	must(unix.Setxattr(filepath.Join(src, "etc/hostname"), idxattr.ACLAccess, acl(from+33, from+44), 0))
	must(unix.Setxattr(filepath.Join(src, "etc/hostname"), "user.note", []byte("kept"), 0))
	return src, victim
}

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func newDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "dst")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func stat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// checkCopy checks a copy of sourceTree shifted to base.
func checkCopy(t *testing.T, dst, victim string, base uint32) {
	t.Helper()
	owner := func(p string, uid, gid uint32) {
		t.Helper()
		st := stat(t, filepath.Join(dst, p))
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("/%s is owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
	owner("", base, base)
	for _, p := range []string{"etc", "etc/hostname", "bin/su", "etc/evil", "var/fifo", "var/sparse", "deep/a/b/c"} {
		owner(p, base+1000, base+100)
	}
	if st := stat(t, filepath.Join(dst, "bin/su")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("the setuid file has mode %o after the copy", st.Mode&0o7777)
	}
	if a, b := stat(t, filepath.Join(dst, "bin/su")), stat(t, filepath.Join(dst, "deep/a/b/c/su-again")); a.Ino != b.Ino {
		t.Errorf("hard links became two files")
	}
	if target, _ := os.Readlink(filepath.Join(dst, "etc/evil")); target != victim {
		t.Errorf("the link leads to %q, want %q as it was", target, victim)
	}
	if st := stat(t, filepath.Join(dst, "var/fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("the FIFO is not one after the copy: %o", st.Mode)
	}
	if st := stat(t, filepath.Join(dst, "var/sparse")); st.Size != 64<<20+3 || st.Blocks*512 > 1<<20 {
		t.Errorf("the sparse file has size %d and %d blocks", st.Size, st.Blocks)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(dst, "bin/ping"), idxattr.Capability, buf)
	if err != nil || !bytes.Equal(buf[:n], capV3(base)) {
		t.Errorf("file capability %x (%v), want rootid %d: %x", buf[:n], err, base, capV3(base))
	}
	n, err = unix.Getxattr(filepath.Join(dst, "etc/hostname"), idxattr.ACLAccess, buf)
	if err != nil || !bytes.Equal(buf[:n], acl(base+33, base+44)) {
		t.Errorf("ACL %x (%v), want %x", buf[:n], err, acl(base+33, base+44))
	}
	n, err = unix.Getxattr(filepath.Join(dst, "etc/hostname"), "user.note", buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Errorf("user.note %q (%v)", buf[:n], err)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "etc/hostname")); string(data) != "web\n" {
		t.Errorf("content %q", data)
	}
	if data, _ := os.ReadFile(victim); string(data) != "the host's own\n" {
		t.Errorf("the victim changed: %q", data)
	}
	if st := stat(t, victim); st.Uid != 0 {
		t.Errorf("the victim's owner changed: %d", st.Uid)
	}
}

func TestCopyShifts(t *testing.T) {
	testutil.RequiresRoot(t)
	src, victim := sourceTree(t)
	dst := newDir(t)
	var progress int64
	st, err := Copy(context.Background(), open(t, src), open(t, dst), Options{
		Shift: Shift{From: from, To: to, Size: 65536}, Progress: func(n int64) { progress = n },
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCopy(t, dst, victim, to)
	if st.Files != 4 || st.Hardlinks != 1 || st.Symlinks != 2 || st.Special != 2 || st.Unmapped != 0 {
		t.Errorf("stats %+v", st)
	}
	if progress != st.Bytes {
		t.Errorf("progress reached %d of %d bytes", progress, st.Bytes)
	}
	t.Log(st.Summary())
}

func TestTarRoundTrip(t *testing.T) {
	testutil.RequiresRoot(t)
	src, victim := sourceTree(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	st, err := WriteTar(context.Background(), open(t, src), tw, "root/", Options{Shift: Shift{From: from, To: 0, Size: 65536}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if st.SkippedCount != 1 || !strings.Contains(st.Summary(), "/var/socket") {
		t.Errorf("the socket was not reported as skipped: %s", st.Summary())
	}
	read := func(dst *os.File) error {
		tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
		r := NewTreeReader("root/", dst, Options{Shift: Shift{From: 0, To: to, Size: 65536}})
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if err := r.Add(h, tr); err != nil {
				r.Abort()
				return err
			}
		}
		_, err := r.Finish()
		return err
	}
	if err := read(nil); err != nil {
		t.Fatalf("checking: %v", err)
	}
	dst := newDir(t)
	if err := read(open(t, dst)); err != nil {
		t.Fatal(err)
	}
	checkCopy(t, dst, victim, to)
}

// TestTreeReaderRefuses: an archive's tree cannot leave its top, repeat a
// path, link to what is not a file before it, or come out of order.
func TestTreeReaderRefuses(t *testing.T) {
	dir := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
	file := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	for _, c := range []struct {
		what    string
		headers []*tar.Header
	}{
		{"a path with ..", []*tar.Header{dir("root/"), file("root/../etc/passwd")}},
		{"an absolute path", []*tar.Header{dir("root/"), file("root//etc/passwd")}},
		{"no top first", []*tar.Header{file("root/a")}},
		{"a path twice", []*tar.Header{dir("root/"), dir("root/a/"), dir("root/a/")}},
		{"a hard link outside", []*tar.Header{dir("root/"), {Name: "root/x", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}},
		{"a hard link to a directory", []*tar.Header{dir("root/"), dir("root/d/"), {Name: "root/x", Typeflag: tar.TypeLink, Linkname: "root/d"}}},
		{"a hard link forward", []*tar.Header{dir("root/"), {Name: "root/x", Typeflag: tar.TypeLink, Linkname: "root/y"}, file("root/y")}},
		{"out of order", []*tar.Header{dir("root/"), dir("root/a/"), dir("root/b/"), file("root/a/late")}},
		{"a device node", []*tar.Header{dir("root/"), {Name: "root/sda", Typeflag: tar.TypeBlock, Devmajor: 8}}},
		{"a bad mode", []*tar.Header{dir("root/"), {Name: "root/x", Typeflag: tar.TypeReg, Mode: 0o100644}}},
	} {
		r := NewTreeReader("root/", nil, Options{Shift: Shift{From: 0, To: to, Size: 65536}})
		var err error
		for _, h := range c.headers {
			if err = r.Add(h, bytes.NewReader(nil)); err != nil {
				break
			}
		}
		if err == nil {
			_, err = r.Finish()
		}
		if !errors.Is(err, ErrBadTree) {
			t.Errorf("%s: %v, want ErrBadTree", c.what, err)
		}
	}
}

func TestShiftMap(t *testing.T) {
	s := Shift{From: from, To: to, Size: 65536}
	for _, c := range []struct {
		in, out uint32
		ok      bool
	}{{from, to, true}, {from + 65535, to + 65535, true}, {0, to + 65534, false}, {from + 65536, to + 65534, false}} {
		if out, ok := s.Map(c.in); out != c.out || ok != c.ok {
			t.Errorf("Map(%d) = %d, %v; want %d, %v", c.in, out, ok, c.out, c.ok)
		}
	}
	if out, ok := (Shift{}).Map(12345); out != 12345 || !ok {
		t.Errorf("identity Map = %d, %v", out, ok)
	}
	// A revision 2 capability (the host's root) becomes the target root's.
	v2 := capV3(0)[:capSize2]
	binary.LittleEndian.PutUint32(v2, capRevision2|1)
	out, keep, _ := s.shiftXattr(idxattr.Capability, v2)
	if !keep || !bytes.Equal(out, capV3(to)) {
		t.Errorf("v2 capability became %x, keep %v; want %x", out, keep, capV3(to))
	}
	// Capabilities for a namespace root outside the range are dropped.
	if _, keep, unmapped := s.shiftXattr(idxattr.Capability, capV3(7)); keep || !unmapped {
		t.Errorf("a foreign rootid was kept")
	}
}
