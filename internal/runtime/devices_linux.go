package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	devconfig "github.com/opencontainers/cgroups/devices/config"
	"golang.org/x/sys/unix"
)

// Device is a host device node the container may use besides the standard
// ones (allowedDevices, as nixos-container's).
type Device struct {
	Path string // the node on the host and inside, e.g. /dev/net/tun
	// Permissions are the device cgroup's: r (read), w (write), m (mknod).
	Permissions string
}

// extraDevices turns the allowed devices into device cgroup rules and into
// nodes inside, bound by libcontainer. A privileged container gets the
// host's node. An unprivileged one cannot use the host's node (owned by
// the host's root, whom its root cannot act as: a 0600 node such as
// /dev/net/tun would not open), nor a node of its own on a file system it
// mounted (those ignore device nodes), and devtmpfs has no idmapped
// mounts. So the host makes a copy of the node, owned by the container's
// root, in DeviceDir on the host's own file system, and binds that.
// DeviceDir is closed to everyone but root: the container's root owns its
// copies and could open their modes, which must not let host users reach
// the device.
func (c *Container) extraDevices() (rules []*devconfig.Rule, mounts []hostMount, err error) {
	for _, d := range c.Devices {
		var st unix.Stat_t
		if err := unix.Stat(d.Path, &st); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("allowedDevices: %s does not exist on the host", d.Path)
			}
			return nil, nil, fmt.Errorf("allowedDevices: %s: %w", d.Path, err)
		}
		var typ devconfig.Type
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = devconfig.CharDevice
		case unix.S_IFBLK:
			typ = devconfig.BlockDevice
		default:
			return nil, nil, fmt.Errorf("allowedDevices: %s is not a device node", d.Path)
		}
		rule := devconfig.Rule{
			Type: typ, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
			Permissions: devconfig.Permissions(d.Permissions), Allow: true,
		}
		rules = append(rules, &rule)
		source := d.Path
		if !c.Privileged() {
			if source, err = c.deviceCopy(d.Path, st); err != nil {
				return nil, nil, err
			}
		}
		mounts = append(mounts, hostMount{source: source, dest: d.Path, kind: deviceCopy,
			attrs: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC, what: "allowedDevices " + d.Path})
	}
	return rules, mounts, nil
}

// deviceCopy makes (or remakes) the container's copy of a host device node
// in DeviceDir, owned by the container's root and with the host node's
// mode.
func (c *Container) deviceCopy(path string, st unix.Stat_t) (string, error) {
	if c.DeviceDir == "" {
		return "", fmt.Errorf("allowedDevices: %s: no directory for device nodes", path)
	}
	if err := os.MkdirAll(c.DeviceDir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(c.DeviceDir, 0o700); err != nil { // made 0711 by earlier versions
		return "", err
	}
	copyPath := filepath.Join(c.DeviceDir, strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "-"))
	_ = os.Remove(copyPath)
	if err := makeNode(copyPath, st.Mode&(unix.S_IFMT|0o777), int(st.Rdev), int(c.IDs.Start)); err != nil {
		return "", fmt.Errorf("allowedDevices: copying %s: %w", path, err)
	}
	return copyPath, nil
}

// makeNode makes the device node path (mode holds its type and
// permissions) with those permissions, whatever the umask, owned by uid
// and the group of that number.
func makeNode(path string, mode uint32, dev, uid int) error {
	if err := unix.Mknod(path, mode, dev); err != nil {
		return err
	}
	// umask may have narrowed the mode mknod got.
	if err := unix.Chmod(path, mode&0o777); err != nil {
		return err
	}
	return os.Lchown(path, uid, uid)
}
