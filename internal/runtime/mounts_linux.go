package runtime

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/nixcell/nixcell/internal/kernel"
	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// Some containers need mounts made before libcontainer sees them: a root
// composed of layers (ephemeral), a root seen through an idmapped mount (a
// plain root file system owned by the host's IDs), and a store that holds
// only a closure. libcontainer cannot mount anything at "/", and the
// closure view is hundreds of mounts that are cheaper made once here than
// as idmapped binds one by one.
//
// These mounts are made in a mount namespace of their own, on a thread that
// is thrown away afterwards; the container's init is started from that
// thread, so its mount namespace is a copy of that one. Nothing is ever
// mounted in the host's namespace: when the container's last process ends,
// the kernel drops every one of these mounts, and with them the ephemeral
// root's tmpfs. A stop, a kill, an init that dies on its own and a nixcell
// killed halfway all leave nothing mounted behind.
//
// Layout of HostDir during a start (mount points are empty directories in
// the host's namespace):
//
//	HostDir/host/    files for /run/host inside (bound read-only)
//	HostDir/lower/   RootFS, bound (idmapped for a plain root)
//	HostDir/upper/   the ephemeral root's tmpfs: data/ and work/ of the overlay
//	HostDir/root/    the composed root libcontainer boots
//	HostDir/nix/     the host's /nix/store, idmapped, for the closure view
//	HostDir/store/   a tmpfs with a bind of each closure path, /nix/store inside

// The main goroutine keeps the main thread for itself. The Go runtime
// discards a thread whose goroutine ends while locked to it (as
// inPrivateMounts's does), except the main thread, which it keeps: had
// that goroutine run there, the process's main thread would stay in the
// private mount namespace, and with it the mounts, for the rest of the
// process. Locking the main goroutine to it in an init, before any other
// goroutine exists, keeps every other goroutine off it.
func init() { goruntime.LockOSThread() }

// inPrivateMounts runs f on a locked thread in a new mount namespace whose
// mounts receive the host's but do not propagate back. Processes that f
// starts inherit that namespace. The thread is discarded when f returns.
func inPrivateMounts(f func() error) error {
	// The cgroup library opens /sys/fs/cgroup once and keeps the handle
	// for the life of the process: open it here, in the host's namespace,
	// not in the private one, which is gone when this returns.
	_, _ = cgroups.ReadFile("/sys/fs/cgroup", "cgroup.controllers")
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if unix.Gettid() == unix.Getpid() {
			errc <- errors.New("a private mount namespace on the main thread would outlive the start; the main goroutine must keep the main thread (see init)")
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("creating a mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			errc <- fmt.Errorf("making the mount namespace a slave of the host's: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// composedRoot tells whether the root libcontainer boots is a mount made
// by nixcell rather than RootFS itself.
func (c *Container) composedRoot() bool {
	return c.Ephemeral || c.PlainRoot && !c.Privileged()
}

// bootRoot is the directory libcontainer gets as the container's root.
func (c *Container) bootRoot() string {
	if c.composedRoot() {
		return filepath.Join(c.HostDir, "root")
	}
	return c.RootFS
}

// closureStore is the directory bound at /nix/store when only the closure
// is visible.
func (c *Container) closureStore() string { return filepath.Join(c.HostDir, "store") }

// mountPrivate makes the composed root and the closure store, if the
// container has them. userns holds its ID mapping (nil when privileged).
// It must run inside inPrivateMounts.
func (c *Container) mountPrivate(userns *os.File) error {
	if c.composedRoot() {
		if err := c.mountRoot(userns); err != nil {
			return err
		}
	}
	if c.StorePaths != nil {
		if err := c.mountClosureStore(userns); err != nil {
			return err
		}
	}
	return nil
}

// mountRoot mounts the root the container boots at HostDir/root: RootFS
// (idmapped when it is a plain root of an unprivileged container), under
// an overlay whose upper layer is a fresh tmpfs when the container is
// ephemeral.
func (c *Container) mountRoot(userns *os.File) error {
	lower := filepath.Join(c.HostDir, "lower")
	composed := filepath.Join(c.HostDir, "root")
	target := composed
	if c.Ephemeral {
		target = lower
	}
	root := hostMount{source: c.RootFS, recursive: true, idmap: c.PlainRoot && userns != nil}
	if err := stage(root, target, userns); err != nil {
		return fmt.Errorf("mounting the root %s: %w", c.RootFS, err)
	}
	if !c.Ephemeral {
		return nil
	}
	upper := filepath.Join(c.HostDir, "upper")
	if err := unix.Mount("tmpfs", upper, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mounting the ephemeral root's tmpfs: %w", err)
	}
	// The upper directory is the overlay's root directory: it takes the
	// owner and mode of the root it covers (as the container sees it).
	var st unix.Stat_t
	if err := unix.Stat(lower, &st); err != nil {
		return err
	}
	data, work := filepath.Join(upper, "data"), filepath.Join(upper, "work")
	for _, d := range []string{data, work} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(data, os.FileMode(st.Mode&0o7777)); err != nil {
		return err
	}
	if err := os.Chown(data, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	opts := "lowerdir=" + lower + ",upperdir=" + data + ",workdir=" + work
	if err := unix.Mount("overlay", composed, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting the ephemeral root (overlay %s): %w", opts, err)
	}
	return nil
}

// mountClosureStore builds the closure view of /nix/store at
// HostDir/store: the directory of mount points closureView keeps, bound
// there, with a read-only bind of each closure path on its mount point,
// taken from one idmapped mount of the host's store, so every path appears
// root-owned inside as the full store does. Bind mounts of the container
// that go below /nix/store have their mount points there too, since the
// view ends up read-only.
func (c *Container) mountClosureStore(userns *os.File) error {
	view, err := c.closureView()
	if err != nil {
		return fmt.Errorf("the closure store's mount points: %w", err)
	}
	links, err := symlinksIn(view)
	if err != nil {
		return fmt.Errorf("the closure store's mount points: %w", err)
	}
	store := c.closureStore()
	src := "/nix/store"
	if userns != nil {
		src = filepath.Join(c.HostDir, "nix")
		store := hostMount{source: "/nix/store", readOnly: true, idmap: true, attrs: nixAttrs}
		if err := stage(store, src, userns); err != nil {
			return fmt.Errorf("mounting /nix/store: %w", err)
		}
	}
	if err := unix.Mount(view, store, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("mounting the closure store's mount points: %w", err)
	}
	for _, p := range c.StorePaths {
		base := filepath.Base(p)
		if links[base] {
			continue // a symbolic link in the view itself
		}
		to := filepath.Join(store, base)
		if err := unix.Mount(filepath.Join(src, base), to, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s: %w", p, err)
		}
		if userns == nil {
			if err := unix.Mount("", to, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("making %s read-only: %w", p, err)
			}
		}
	}
	if err := unix.Mount("", store, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("making the closure store read-only: %w", err)
	}
	return nil
}

// PrepareClosureView makes the closure view a start of c uses (see
// closureView) ahead of that start. Preconditions: the container's lock is
// held.
func (c *Container) PrepareClosureView() error {
	_, err := c.closureView()
	return err
}

// closureView returns the directory of the closure view's mount points
// (ClosureViewDir/KEY): for each closure path an empty directory, an empty
// file, or the symbolic link it is; mount points for the bind mounts below
// /nix/store; the directory itself owned by the container's root. KEY
// names all of that, so a view is made once and used by every start until
// the system, the ID range or those bind mounts change; a new one replaces
// the old. Making the mount points of a closure of a thousand paths takes
// tens of milliseconds; a start only binds the paths on them. It is made
// under a temporary name and renamed whole, so a start killed meanwhile
// leaves at most that temporary directory, which the next one (or
// state.Store.RemovePartial) removes. Preconditions: the container's lock
// is held.
func (c *Container) closureView() (string, error) {
	var points []bindPoint
	for _, b := range c.Binds {
		if rel, ok := strings.CutPrefix(b.Destination, "/nix/store/"); ok {
			points = append(points, bindPoint{rel, !isFile(b.Source)})
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "nixcell closure view 1\n%d\n", c.IDs.Start)
	for _, p := range c.StorePaths {
		base := filepath.Base(p)
		if filepath.Dir(p) != "/nix/store" || base == "." || base == ".." {
			return "", fmt.Errorf("%q is not a store path", p)
		}
		fmt.Fprintf(h, "%s\n", base)
	}
	for _, b := range points {
		fmt.Fprintf(h, "bind %s %t\n", b.dest, b.isDir)
	}
	dir := c.ClosureViewDir
	view := filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:32])
	if fi, err := os.Lstat(view); err == nil && fi.IsDir() {
		return view, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// The views of earlier systems, and what a killed start left.
	old, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range old {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return "", err
		}
	}
	tmp, err := os.MkdirTemp(dir, ".tmp-")
	if err != nil {
		return "", err
	}
	if err := c.makeClosureView(tmp, points); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, view); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return view, nil
}

// makeClosureView makes closureView's content in dir, which nothing but
// this process writes (it is below ClosureViewDir, which only root may
// pass).
func (c *Container) makeClosureView(dir string, points []bindPoint) error {
	root := int(c.IDs.Start)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chown(dir, root, root); err != nil {
		return err
	}
	for _, p := range c.StorePaths {
		from, to := p, filepath.Join(dir, filepath.Base(p))
		fi, err := os.Lstat(from)
		if err != nil {
			return fmt.Errorf("closure path %s: %w", p, err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(from)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			err = os.Lchown(to, root, root)
		case fi.IsDir():
			err = os.Mkdir(to, 0o555)
		default:
			err = os.WriteFile(to, nil, 0o444)
		}
		if err != nil {
			return fmt.Errorf("mount point for %s: %w", p, err)
		}
	}
	for _, b := range points {
		if err := bindMountPoint(filepath.Join(dir, b.dest), b.isDir); err != nil {
			return fmt.Errorf("bind mount /nix/store/%s: %w", b.dest, err)
		}
	}
	return nil
}

// bindPoint is the mount point of a bind mount below /nix/store: its path
// there, and whether it is a directory.
type bindPoint struct {
	dest  string
	isDir bool
}

// isFile tells whether the host path src is a file other than a
// directory, looked at without following a link (a bind source may lie in
// a tree a container writes; prepareBinds refuses one with a link).
func isFile(src string) bool {
	f, err := hostfs.Open(src, unix.O_PATH)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && !fi.IsDir()
}

// symlinksIn tells which entries of dir are symbolic links.
func symlinksIn(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	links := map[string]bool{}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 {
			links[e.Name()] = true
		}
	}
	return links, nil
}

// bindMountPoint creates at dst (and its parents) a directory, or an
// empty file when isDir is false, unless something is there already.
func bindMountPoint(dst string, isDir bool) error {
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if !isDir {
		return os.WriteFile(dst, nil, 0o444)
	}
	return os.Mkdir(dst, 0o755)
}

// idmapUserns returns a user namespace with the container's ID mapping,
// which idmapped mounts take as their mapping. Preconditions: called on a
// locked thread.
func (c *Container) idmapUserns() (*os.File, error) {
	return kernel.UserNamespace(c.IDs.Start, c.IDs.Size)
}

// removeHostDir deletes a container's HostDir. Nothing is mounted there in
// the host's namespace by design; should anything be, it refuses rather
// than delete through the mount into what is mounted.
func removeHostDir(dir string) error {
	if dir == "" {
		return nil
	}
	mounted, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounted) > 0 {
		return fmt.Errorf("not removing %s: %s is mounted in the host's mount namespace; unmount it", dir, mounted[0])
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// MountsUnder lists the mount points at or below dir in this process's
// mount namespace (the host's): nixcell never leaves any there.
func MountsUnder(dir string) ([]string, error) { return mountsUnder(dir) }

// mountsUnder lists the mount points at or below dir in this process's
// mount namespace.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	return found, s.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				v = v*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
