package runtime

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
)

// Limits caps a container's resources through its cgroup; zero fields are
// unlimited.
type Limits struct {
	// MemoryBytes caps memory; swap counts against it (memory.memsw on
	// cgroup v1 where the kernel accounts swap, memory.swap.max = 0 on v2),
	// so the kernel's OOM killer acts at the limit instead of the container
	// swapping past it.
	MemoryBytes uint64
	// CPUs caps CPU time: 1.5 is a CFS quota of 150 ms per 100 ms period.
	CPUs float64
	// Pids caps the number of processes and threads.
	Pids int64
}

// cpuPeriod is the CFS period in microseconds (the kernel's default).
const cpuPeriod = 100_000

// apply sets the limits on r. With lift, unlimited ones are written as -1
// ("max"), so that new limits for a running container also lift the ones
// that were dropped; without, they are left out, and a new cgroup keeps the
// kernel's defaults (no limit).
func (l Limits) apply(r *cgroups.Resources, lift bool) {
	r.Memory, r.MemorySwap = 0, 0
	if lift {
		r.Memory = -1 // libcontainer lifts memory+swap with it
	}
	if l.MemoryBytes > 0 {
		r.Memory = int64(min(l.MemoryBytes, math.MaxInt64))
		if swapAccounting() {
			r.MemorySwap = r.Memory
		}
	}
	r.CpuPeriod, r.CpuQuota = 0, 0
	if lift {
		r.CpuPeriod, r.CpuQuota = cpuPeriod, -1
	}
	if l.CPUs > 0 {
		r.CpuPeriod, r.CpuQuota = cpuPeriod, int64(math.Round(l.CPUs*cpuPeriod))
	}
	r.PidsLimit = nil
	if lift || l.Pids > 0 {
		pids := int64(-1)
		if l.Pids > 0 {
			pids = l.Pids
		}
		r.PidsLimit = &pids
	}
}

// swapAccounting tells whether the memory cgroup can limit swap. cgroup v2
// always can (libcontainer skips a missing memory.swap.max); cgroup v1 only
// when the kernel accounts swap (memory.memsw.* exist).
func swapAccounting() bool {
	if cgroups.IsCgroup2UnifiedMode() {
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}

// SetLimits applies new limits to the running container at once, without
// restarting it. A memory limit below what the container uses now is
// refused, and a refused change leaves the previous limits in force.
func SetLimits(stateRoot, name string, l Limits) error {
	lc, err := loadRunning(stateRoot, name)
	if err != nil {
		return err
	}
	cfg := lc.Config()
	res := *cfg.Cgroups.Resources
	l.apply(&res, true)
	// cgroup v2 would OOM-kill processes to get below a lower memory.max;
	// refuse such a limit instead, as cgroup v1 does (EBUSY).
	res.MemoryCheckBeforeUpdate = true
	cg := *cfg.Cgroups
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := lc.Set(cfg); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return lifecycle.ErrNotRunning
		}
		return fmt.Errorf("setting limits: %w", err)
	}
	return nil
}

// Stats is a running container's resource use as the kernel accounts it in
// the container's cgroup. Limits of zero mean unlimited. Fields are only
// ever added.
type Stats struct {
	Memory MemoryStats `json:"memory"`
	CPU    CPUStats    `json:"cpu"`
	Pids   PidsStats   `json:"pids"`
}

// MemoryStats is the container's memory use.
type MemoryStats struct {
	// UsageBytes is what the kernel charges the container now, page cache
	// and tmpfs files included (memory.usage_in_bytes, memory.current).
	UsageBytes uint64 `json:"usageBytes"`
	// MaxUsageBytes is the peak usage (cgroup v1 and v2 from Linux 5.19).
	MaxUsageBytes uint64 `json:"maxUsageBytes,omitempty"`
	LimitBytes    uint64 `json:"limitBytes"`
	// OOMKills counts the processes the kernel's OOM killer ended in the
	// container's cgroup since it was created (oom_kill in
	// memory.oom_control on v1, memory.events on v2).
	OOMKills uint64 `json:"oomKills"`
}

// CPUStats is the container's CPU use.
type CPUStats struct {
	// UsageNanos is the CPU time all its processes used, in nanoseconds;
	// UserNanos and SystemNanos split it where the kernel reports them.
	UsageNanos  uint64 `json:"usageNanos"`
	UserNanos   uint64 `json:"userNanos"`
	SystemNanos uint64 `json:"systemNanos"`
	// Limit is the quota in CPUs as applied (0: unlimited);
	// ThrottledNanos is how long the quota held its processes back.
	Limit          float64 `json:"limit"`
	ThrottledNanos uint64  `json:"throttledNanos"`
}

// PidsStats is the container's number of processes and threads.
type PidsStats struct {
	Current uint64 `json:"current"`
	Limit   uint64 `json:"limit"`
}

// noLimit is the smallest value a kernel reports for "no memory limit"
// (cgroup v1 reports PAGE_COUNTER_MAX pages in bytes, v2 libcontainer
// math.MaxUint64).
const noLimit = 1 << 62

// ReadStats reads the running container's resource use from its cgroup.
func ReadStats(stateRoot, name string) (Stats, error) {
	lc, err := loadRunning(stateRoot, name)
	if err != nil {
		return Stats{}, err
	}
	st, err := lc.Stats()
	if err != nil {
		return Stats{}, fmt.Errorf("reading cgroup statistics: %w", err)
	}
	cg := st.CgroupStats
	if cg == nil {
		return Stats{}, errors.New("reading cgroup statistics: libcontainer returned none")
	}
	mem, cpu := cg.MemoryStats, cg.CpuStats
	s := Stats{
		Memory: MemoryStats{
			UsageBytes:    mem.Usage.Usage,
			MaxUsageBytes: mem.Usage.MaxUsage,
			LimitBytes:    mem.Usage.Limit,
		},
		CPU: CPUStats{
			UsageNanos:     cpu.CpuUsage.TotalUsage,
			UserNanos:      cpu.CpuUsage.UsageInUsermode,
			SystemNanos:    cpu.CpuUsage.UsageInKernelmode,
			ThrottledNanos: cpu.ThrottlingData.ThrottledTime,
		},
		Pids: PidsStats{Current: cg.PidsStats.Current, Limit: cg.PidsStats.Limit},
	}
	if s.Memory.LimitBytes >= noLimit {
		s.Memory.LimitBytes = 0
	}
	if r := lc.Config().Cgroups.Resources; r != nil && r.CpuQuota > 0 && r.CpuPeriod > 0 {
		s.CPU.Limit = float64(r.CpuQuota) / float64(r.CpuPeriod)
	}
	if state, err := lc.State(); err == nil {
		s.Memory.OOMKills = oomKills(state.CgroupPaths)
	}
	return s, nil
}

// oomKills reads the OOM kill count of a cgroup, which libcontainer's
// statistics lack (and memory.failcnt, which they have, stays 0 on recent
// kernels); 0 when the kernel does not say.
func oomKills(paths map[string]string) uint64 {
	file := filepath.Join(paths["memory"], "memory.oom_control")
	if cgroups.IsCgroup2UnifiedMode() {
		file = filepath.Join(paths[""], "memory.events")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// loadRunning loads the libcontainer container of a running container.
func loadRunning(stateRoot, name string) (*libcontainer.Container, error) {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return nil, lifecycle.ErrNotRunning
	}
	if err != nil {
		return nil, fmt.Errorf("loading runtime state: %w", err)
	}
	if st, err := lc.Status(); err != nil || st == libcontainer.Stopped {
		return nil, lifecycle.ErrNotRunning
	}
	return lc, nil
}
