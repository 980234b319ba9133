package quota

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/nixcell/nixcell/internal/testutil"
)

// The structures match the kernel's sizes (linux/fs.h, linux/quota.h,
// linux/btrfs.h), which their ioctl numbers encode too.
func TestABI(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"fsxattr":                       {unsafe.Sizeof(fsxattr{}), 28},
		"if_dqblk":                      {unsafe.Sizeof(ifDqblk{}), 72},
		"btrfs_ioctl_ino_lookup_args":   {unsafe.Sizeof(btrfsInoLookupArgs{}), 4096},
		"btrfs_ioctl_vol_args":          {unsafe.Sizeof(btrfsVolArgs{}), 4096},
		"btrfs_ioctl_qgroup_limit_args": {unsafe.Sizeof(btrfsQgroupLimitArgs{}), 48},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", name, c.got, c.want)
		}
	}
	for name, c := range map[string]struct {
		req  uintptr
		size uintptr
	}{
		"FS_IOC_FSGETXATTR": {fsIocFsgetxattr, 28}, "FS_IOC_FSSETXATTR": {fsIocFssetxattr, 28},
		"BTRFS_IOC_SUBVOL_CREATE": {btrfsIocSubvolCreate, 4096}, "BTRFS_IOC_QGROUP_LIMIT": {btrfsIocQgroupLimit, 48},
		"BTRFS_IOC_INO_LOOKUP": {btrfsIocInoLookup, 4096},
	} {
		if got := c.req >> 16 & 0x3fff; got != c.size {
			t.Errorf("%s encodes size %d, want %d", name, got, c.size)
		}
	}
}

// A file system without quotas refuses a limit with what it needs, and
// takes "no limit" as nothing to do; the directory is left as it was.
func TestUnsupported(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		kind, fsName, err := kindOf(dir)
		if err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(dir, "quota-test-root")
		if dir == "/dev/shm" {
			root, _ = os.MkdirTemp(dir, "quota-test-")
			t.Cleanup(func() { os.RemoveAll(root) })
		} else if err := MakeRoot(root); err != nil {
			t.Fatal(err)
		}
		err = Set(root, 4242, 8<<20)
		if err == nil {
			t.Logf("%s (%s) holds quotas: nothing to check", dir, fsName)
			continue
		}
		t.Logf("%s: %v", dir, err)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), fsName) {
			t.Errorf("Set on %s: %v, want ErrUnsupported naming %s", fsName, err, fsName)
		}
		if kind == project && !strings.Contains(err.Error(), "prjquota") {
			t.Errorf("Set on %s: %v, want what it needs (prjquota)", fsName, err)
		}
		if err := Set(root, 4242, 0); err != nil {
			t.Errorf("Set(0) on %s: %v", fsName, err)
		}
		if err := Clear(root, 4242); err != nil {
			t.Errorf("Clear on %s: %v", fsName, err)
		}
	}
}
