package driver

import (
	"path/filepath"
	"runtime"
	"strings"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// limitsOf are the container's limits: memory from Nomad's resources (the
// larger of memory and memory_max, as Nomad's own drivers), CPU only with
// cpu_hard_limit (nixcell caps CPU time but has no relative weights: the
// task's share of the node's CPU becomes a quota), processes from the
// task's pids.
func limitsOf(cfg *drivers.TaskConfig, tc TaskConfig) limits {
	var l limits
	if r := cfg.Resources; r != nil && r.LinuxResources != nil {
		lr := r.LinuxResources
		if lr.MemoryLimitBytes > 0 {
			l.MemoryBytes = uint64(lr.MemoryLimitBytes)
		}
		if tc.CPUHardLimit && lr.PercentTicks > 0 {
			l.CPUs = max(lr.PercentTicks*float64(runtime.NumCPU()), 0.01)
		}
	}
	l.Pids = tc.Pids
	return l
}

// envOf is the environment the init gets from Nomad (NOMAD_* and the
// task's env block), without what the runtime sets itself.
func envOf(cfg *drivers.TaskConfig) []string {
	var env []string
	for _, kv := range cfg.EnvList() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "TERM", "NOTIFY_SOCKET", "container", "container_uuid":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// bindsOf are the task's directories (at /alloc, /local and /secrets, as
// Nomad's image drivers mount them) and the volumes Nomad mounts for it.
func bindsOf(cfg *drivers.TaskConfig) []bind {
	var binds []bind
	if cfg.AllocDir != "" {
		td := cfg.TaskDir()
		binds = append(binds,
			bind{HostPath: td.SharedAllocDir, Path: "/alloc"},
			bind{HostPath: td.LocalDir, Path: "/local"},
			bind{HostPath: td.SecretsDir, Path: "/secrets"},
		)
	}
	for _, m := range cfg.Mounts {
		binds = append(binds, bind{HostPath: m.HostPath, Path: filepath.Clean(m.TaskPath), ReadOnly: m.Readonly})
	}
	return binds
}

// forwardsOf are the host ports Nomad allocated to the task, forwarded to
// the container, TCP and UDP.
func forwardsOf(cfg *drivers.TaskConfig) []portForward {
	if cfg.Resources == nil || cfg.Resources.Ports == nil {
		return nil
	}
	var fw []portForward
	for _, p := range *cfg.Resources.Ports {
		for _, proto := range []string{"tcp", "udp"} {
			fw = append(fw, portForward{Protocol: proto, HostAddress: p.HostIP, HostPort: p.Value, ContainerPort: containerPort(p.Value, p.To)})
		}
	}
	return fw
}

// containerPort is the container's port for a host port: the port's "to"
// when it has one, else the same port.
func containerPort(value, to int) int {
	if to > 0 {
		return to
	}
	return value
}

// portMap maps each port label to the container's port, for services that
// advertise the container's own address (address_mode = "driver").
func portMap(cfg *drivers.TaskConfig) map[string]int {
	m := map[string]int{}
	if cfg.Resources == nil || cfg.Resources.Ports == nil {
		return m
	}
	for _, p := range *cfg.Resources.Ports {
		m[p.Label] = containerPort(p.Value, p.To)
	}
	return m
}
