package kernel

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUserNamespace maps a file of the host's root through an idmapped mount
// made with the namespace, and checks that the helper is gone.
func TestUserNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: idmapped mounts")
	}
	dir := t.TempDir()
	if err := IdmapSupport(dir); err != nil {
		t.Skipf("no idmapped mounts on %s: %v", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const start, size = 3 << 20, 65536
	userns, err := UserNamespace(start, size)
	if err != nil {
		t.Fatal(err)
	}
	defer userns.Close()
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); err != unix.ECHILD {
		t.Errorf("a child is left: wait4 = %d, %v", pid, err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tree, "f", &st, 0); err != nil {
		t.Fatal(err)
	}
	if st.Uid != start || st.Gid != start {
		t.Errorf("the host's root appears as %d:%d through the mapping, not %d:%d", st.Uid, st.Gid, start, start)
	}
}
