// Package systemd owns nixcell's place on a host whose PID 1 is systemd:
// the nixcell@.service template (a container as a unit), where a
// container's cgroup lives there (a scope of its own under a slice of
// nixcell's, or the payload of its unit's delegated cgroup), the units'
// enablement that expresses autostart, and the container's registration
// with systemd-machined. On other hosts none of this applies, and each
// function says so (Host() is false) rather than fail.
package systemd

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// Host tells whether systemd runs this host (as sd_booted(3) decides).
func Host() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// UnitDir is where install-units writes the template.
const UnitDir = "/etc/systemd/system"

// Template is the name of the unit template: nixcell@NAME.service runs
// the container NAME.
const Template = "nixcell@.service"

// Unit is the unit that runs the container name.
func Unit(name string) string { return "nixcell@" + name + ".service" }

// TemplateText is the unit template for the nixcell binary at bin. The
// NixOS module writes the same settings per declared container.
//
// Type=notify with readiness passed through by `nixcell run` (READY=1 when
// the container is ready: a systemd init's own, a plain init as soon as it
// runs); Delegate=yes, so the container's cgroup is the unit's to manage
// (run puts itself and the container in sub-cgroups of it); stop is run's
// clean stop within TimeoutStopSec (KillMode=mixed: SIGTERM to run, which
// halts the container, and SIGKILL to what is left at the timeout);
// reload switches the container's current generation in place; 133 is a
// reboot of the container, which restarts the unit.
func TemplateText(bin string) string {
	return fmt.Sprintf(`# Installed by nixcell install-units: nixcell@NAME.service runs the container NAME.
# systemctl enable nixcell@NAME is how it starts at boot (autostart = true does that).
[Unit]
Description=nixcell container %%i
Documentation=man:nixcell-run(1)
After=network.target nftables.service
Wants=network.target
PartOf=machines.target
Before=machines.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=%[1]s run --timeout 80s %%i
ExecReload=%[1]s reload %%i
Delegate=yes
Slice=machine.slice
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=90s
Restart=on-failure
RestartForceExitStatus=133
SuccessExitStatus=133

[Install]
WantedBy=machines.target
`, bin)
}

// ErrNotSystemd means the host does not run systemd.
var ErrNotSystemd = errors.New("this host does not run systemd (PID 1 is not systemd): its containers are started by `nixcell start` or `nixcell autostart`")

// InstallUnits writes the template for bin into dir and reloads systemd.
// It returns the path written.
func InstallUnits(ctx context.Context, dir, bin string) (string, error) {
	if !Host() {
		return "", ErrNotSystemd
	}
	path := filepath.Join(dir, Template)
	if err := os.WriteFile(path, []byte(TemplateText(bin)), 0o644); err != nil {
		return "", err
	}
	for _, target := range []string{"machines.target"} {
		_ = systemctl(ctx, "enable", target)
	}
	return path, systemctl(ctx, "daemon-reload")
}

// UnitsInstalled tells whether the template is installed, so that a
// container's autostart is its unit's enablement.
func UnitsInstalled() bool {
	if !Host() {
		return false
	}
	for _, dir := range []string{UnitDir, "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, Template)); err == nil {
			return true
		}
	}
	return false
}

// SetEnabled enables or disables the container's unit (autostart).
func SetEnabled(ctx context.Context, name string, on bool) error {
	verb := "disable"
	if on {
		verb = "enable"
	}
	return systemctl(ctx, verb, "--quiet", Unit(name))
}

func systemctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// OwnUnit returns the cgroup (v2, relative to the hierarchy's root) of the
// unit nixcell@name.service when this process runs as that unit: the
// cgroup the container goes below (Delegate=yes gives it to us). ok is
// false otherwise.
func OwnUnit(name string) (cgroup string, ok bool) {
	if !Host() {
		return "", false
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		path, found := strings.CutPrefix(s.Text(), "0::")
		if !found {
			continue
		}
		if filepath.Base(path) == Unit(name) {
			return path, true
		}
	}
	return "", false
}

// Machine is what machined is told of a container.
type Machine struct {
	Name   string
	UUID   string // the container's, 32 hex digits with or without dashes
	Leader int    // its init
	Root   string // its root directory on the host
	// Service names who runs it, "nixcell".
	Service string
}

// RegisterMachine registers a running container with systemd-machined,
// as systemd-nspawn --keep-unit does: machined takes the leader's unit (its
// scope, or nixcell@NAME.service) as the machine's, and forgets the
// machine when that unit ends. A host without machined is no error: ok is
// false.
func RegisterMachine(m Machine) (ok bool, err error) {
	if !Host() {
		return false, nil
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return false, nil // no system bus: nothing to register with
	}
	defer conn.Close()
	id, err := hex.DecodeString(strings.ReplaceAll(m.UUID, "-", ""))
	if err != nil || len(id) != 16 {
		id = make([]byte, 16)
	}
	obj := conn.Object("org.freedesktop.machine1", "/org/freedesktop/machine1")
	call := obj.Call("org.freedesktop.machine1.Manager.RegisterMachine", 0,
		m.Name, id, m.Service, "container", uint32(m.Leader), m.Root)
	if call.Err != nil {
		var e dbus.Error
		if errors.As(call.Err, &e) && (e.Name == "org.freedesktop.DBus.Error.ServiceUnknown" || e.Name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
			return false, nil // machined is not installed
		}
		return false, fmt.Errorf("registering with systemd-machined: %w", call.Err)
	}
	return true, nil
}

// TerminateMachine asks machined to forget a machine of that name, if it
// knows one; errors are of no consequence (the machine goes with its unit).
func TerminateMachine(name string) {
	if !Host() {
		return
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.Object("org.freedesktop.machine1", "/org/freedesktop/machine1").
		Call("org.freedesktop.machine1.Manager.UnregisterMachine", 0, name).Err
}

// cgroupRoot is where the cgroup2 hierarchy is mounted on a systemd host
// with cgroup v2.
const cgroupRoot = "/sys/fs/cgroup"

// Supervise moves this process out of its unit's cgroup into
// UNIT/supervisor, so that the container can go into UNIT/payload (a
// cgroup with processes cannot hand controllers to its children), as
// systemd-nspawn does under Delegate=yes. It returns the container's
// cgroup, UNIT/payload.
func Supervise(unit string) (payload string, err error) {
	supervisor := filepath.Join(cgroupRoot, unit, "supervisor")
	if err := os.Mkdir(supervisor, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("making %s: %w", supervisor, err)
	}
	if err := os.WriteFile(filepath.Join(supervisor, "cgroup.procs"), []byte("0"), 0o644); err != nil {
		return "", fmt.Errorf("moving nixcell run into %s: %w", supervisor, err)
	}
	return filepath.Join(unit, "payload"), nil
}

// Slice is the slice an instance's containers' scopes live in: its cgroup
// parent ("/nixcell" or "/nixcell-ID") as a slice name, and the scopes'
// prefix.
func Slice(cgroupParent string) (slice, scopePrefix string) {
	p := strings.TrimPrefix(cgroupParent, "/")
	return p + ".slice", p
}
