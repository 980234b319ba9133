package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// A container gets a cgroup2 hierarchy at /sys/fs/cgroup, mounted inside
// its cgroup namespace so that its root is the container's own cgroup, and
// that cgroup is delegated to the container's root (owned by it), as
// systemd in a container requires. On a cgroup v1 "hybrid" host the
// unified hierarchy (/sys/fs/cgroup/unified) is the one used: it has no
// controllers there, but systemd manages its processes with it. A host
// without cgroup2 gives the container no cgroup file system.

// unifiedMount returns where the host's cgroup2 hierarchy is mounted, or
// "" when it has none.
func unifiedMount() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

// delegatedFiles are the files of a cgroup2 directory that its delegatee
// writes, besides the directory itself (the kernel's cgroup-v2
// documentation, "Delegation Containment").
var delegatedFiles = []string{"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"}

// delegateCgroup makes the container's cgroup2 directory and its
// delegated files owned by the container's root. Preconditions: the init
// has been created (libcontainer made the cgroup) and not yet started.
func (c *Container) delegateCgroup(lc *libcontainer.Container) error {
	mnt := unifiedMount()
	if mnt == "" || c.Privileged() {
		return nil
	}
	dir := filepath.Join(mnt, c.CgroupPath)
	if st, err := lc.State(); err == nil && st.CgroupPaths[""] != "" {
		dir = st.CgroupPaths[""] // where libcontainer (or systemd) made it
	} else if st, err := lc.State(); err == nil && mnt == "/sys/fs/cgroup/unified" && st.CgroupPaths["unified"] != "" {
		dir = st.CgroupPaths["unified"]
	}
	root := int(c.IDs.Start)
	if err := os.Chown(dir, root, root); err != nil {
		return fmt.Errorf("delegating cgroup %s: %w", dir, err)
	}
	for _, f := range delegatedFiles {
		err := os.Chown(filepath.Join(dir, f), root, root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delegating cgroup %s: %w", dir, err)
		}
	}
	return nil
}
