package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ContainerManager is what /run/host/container-manager and $container say
// inside: the name of the container manager, as systemd's container
// interface asks.
const ContainerManager = "nixcell"

// hostOSRelease is copied to /run/host/os-release, as systemd expects of a
// container manager.
const hostOSRelease = "/etc/os-release"

// prepareHostDir creates the container's HostDir afresh: the /run/host
// files, the boot ID of this start and the mount points the composed root
// and store need. The /run/host
// directory and its files belong to the host's root, not to the
// container's: the container could remount its read-only bind read-write
// (it made that mount in its own namespaces), and must not then be able
// to write to the host's /run. Inside they show as nobody's, but readable.
func (c *Container) prepareHostDir() error {
	if err := removeHostDir(c.HostDir); err != nil {
		return err
	}
	if err := os.MkdirAll(c.HostDir, 0o711); err != nil {
		return fmt.Errorf("creating %s: %w", c.HostDir, err)
	}
	host := filepath.Join(c.HostDir, "host")
	if err := os.Mkdir(host, 0o755); err != nil {
		return err
	}
	osRelease, err := os.ReadFile(hostOSRelease)
	if err != nil {
		return fmt.Errorf("reading the host's os-release: %w", err)
	}
	files := map[string]string{
		"os-release":        string(osRelease),
		"container-manager": ContainerManager + "\n",
	}
	if c.UUID != "" {
		files["container-uuid"] = c.UUID + "\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(host, name), []byte(content), 0o444); err != nil {
			return err
		}
	}
	if err := c.writeBootID(); err != nil {
		return err
	}
	var points []string
	if c.composedRoot() {
		points = append(points, "lower", "root")
		if c.Ephemeral {
			points = append(points, "upper")
		}
	}
	if c.StorePaths != nil {
		points = append(points, "nix", "store")
	}
	for _, p := range points {
		if err := os.Mkdir(filepath.Join(c.HostDir, p), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// hostEnv is the environment systemd's container interface defines for
// the init: $container, $container_uuid, and the host's os-release IDs as
// $container_host_*.
func (c *Container) hostEnv() []string {
	env := []string{"container=" + ContainerManager}
	if c.UUID != "" {
		env = append(env, "container_uuid="+c.UUID)
	}
	data, err := os.ReadFile(hostOSRelease)
	if err != nil {
		return env
	}
	keys := map[string]bool{"ID": true, "VERSION_ID": true, "BUILD_ID": true, "VARIANT_ID": true}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "=")
		if !ok || !keys[k] {
			continue
		}
		v = strings.Trim(v, `"'`)
		env = append(env, "container_host_"+strings.ToLower(k)+"="+v)
	}
	return env
}
