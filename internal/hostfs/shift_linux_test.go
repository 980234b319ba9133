package hostfs

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

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
	// A revision 2 capability (cap_net_raw permitted and effective), as
	// a privileged container's root leaves them, and ACLs naming user and
	// group 1000, on a file and as a directory's default.
	capv2 := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv2, 0x02000001)
	binary.LittleEndian.PutUint32(capv2[4:], 1<<13)
	if err := unix.Setxattr(filepath.Join(root, "etc/passwd"), "security.capability", capv2, 0); err != nil {
		t.Fatal(err)
	}
	acl := aclOf(1000)
	for _, a := range []struct{ path, name string }{{"home/alice/notes", "system.posix_acl_access"}, {"home/alice", "system.posix_acl_default"}} {
		if err := unix.Setxattr(filepath.Join(root, a.path), a.name, acl, 0); err != nil {
			t.Fatalf("setting an ACL on %s: %v", a.path, err)
		}
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
	caps := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(root, "etc/passwd"), "security.capability", caps); err != nil || n != 24 ||
		binary.LittleEndian.Uint32(caps)>>24 != 3 || binary.LittleEndian.Uint32(caps[20:]) != to || binary.LittleEndian.Uint32(caps[4:]) != 1<<13 {
		t.Errorf("the capability after the shift: %x (%v), want revision 3 for root %d", caps[:max(n, 0)], err, to)
	}
	for _, a := range []struct{ path, name string }{{"home/alice/notes", "system.posix_acl_access"}, {"home/alice", "system.posix_acl_default"}} {
		got := make([]byte, 256)
		n, err := unix.Getxattr(filepath.Join(root, a.path), a.name, got)
		if err != nil || string(got[:n]) != string(aclOf(to+1000)) {
			t.Errorf("%s of %s after the shift: %x (%v), want %x", a.name, a.path, got[:max(n, 0)], err, aclOf(to+1000))
		}
	}
	// Back again.
	if err := (Shift{From: to, Size: 65536, To: 0}).Apply(root); !errors.As(err, &out) {
		t.Fatalf("shifting back: %v", err)
	}
	if u, _ := owner(t, filepath.Join(root, "home/alice/notes")); u != 1000 {
		t.Errorf("shifted back to %d", u)
	}
	got := make([]byte, 256)
	if n, err := unix.Getxattr(filepath.Join(root, "home/alice/notes"), "system.posix_acl_access", got); err != nil || string(got[:n]) != string(acl) {
		t.Errorf("the ACL shifted back: %x (%v), want %x", got[:max(n, 0)], err, acl)
	}
}

// aclOf is a POSIX ACL attribute giving user and group id read access.
func aclOf(id uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range []struct {
		tag  uint16
		perm uint16
		id   uint32
	}{{0x01, 6, 0xffffffff}, {0x02, 4, id}, {0x04, 4, 0xffffffff}, {0x08, 4, id}, {0x10, 4, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}
