package spec

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bounds of the limits: values the kernel refuses, or with which nothing
// can boot, are refused at create and update instead of failing at start.
const (
	// MinCPUs is the smallest CPU limit: the kernel's smallest CFS quota
	// is 1 ms per period, and nixcell uses a period of 100 ms.
	MinCPUs = 0.01
	// MaxCPUs is the largest: the kernel's largest CFS quota is 2^44-1 µs
	// (kernel/sched/core.c, max_cfs_runtime), per period of 100 ms.
	MaxCPUs = float64(1<<44-1) / 100_000
	// MinMemoryBytes is the smallest memory limit. Before the container's
	// init runs, the runtime's own start-up in the container (libcontainer's
	// init stage, the nixcell binary) is charged to its cgroup, about 3 MiB;
	// the kernel refuses a limit below what is charged, and an init needs
	// some room above it.
	MinMemoryBytes = 4 << 20
	// MaxPids is the largest process limit the kernel takes in pids.max
	// (PID_MAX_LIMIT on 64-bit systems).
	MaxPids = 4 << 20
)

// unlimited is how a limit flag says "no limit".
const unlimited = "max"

// LimitOverrides are limits given on the command line (create --memory,
// --cpus, --pids, and the same flags of update). A set field replaces the
// configuration's value and stays until a flag changes it again, so an
// update that re-evaluates the configuration keeps it; a field set to zero
// means unlimited. Stored with the container; mutable.
type LimitOverrides struct {
	MemoryBytes *uint64  `json:"memoryBytes,omitempty"`
	CPUs        *float64 `json:"cpus,omitempty"`
	Pids        *int64   `json:"pids,omitempty"`
}

// IsZero tells whether no limit is overridden.
func (o LimitOverrides) IsZero() bool {
	return o.MemoryBytes == nil && o.CPUs == nil && o.Pids == nil
}

// Merge returns o with the fields set in newer replacing its own.
func (o LimitOverrides) Merge(newer LimitOverrides) LimitOverrides {
	if newer.MemoryBytes != nil {
		o.MemoryBytes = newer.MemoryBytes
	}
	if newer.CPUs != nil {
		o.CPUs = newer.CPUs
	}
	if newer.Pids != nil {
		o.Pids = newer.Pids
	}
	return o
}

// With returns l with the fields set in o replacing its own: the limits
// that take effect.
func (l Limits) With(o LimitOverrides) Limits {
	if o.MemoryBytes != nil {
		l.MemoryBytes = *o.MemoryBytes
	}
	if o.CPUs != nil {
		l.CPUs = *o.CPUs
	}
	if o.Pids != nil {
		l.Pids = *o.Pids
	}
	return l
}

// String describes the limits for people, e.g. "memory 512MiB, cpus 1.5,
// pids unlimited".
func (l Limits) String() string {
	mem, cpus, pids := unlimited, unlimited, unlimited
	if l.MemoryBytes > 0 {
		mem = FormatSize(l.MemoryBytes)
	}
	if l.CPUs > 0 {
		cpus = strconv.FormatFloat(l.CPUs, 'f', -1, 64)
	}
	if l.Pids > 0 {
		pids = strconv.FormatInt(l.Pids, 10)
	}
	return fmt.Sprintf("memory %s, cpus %s, pids %s", mem, cpus, pids)
}

// ParseMemoryLimit reads a --memory value: a size such as "512M" or "2G",
// or "max" for no limit (0).
func ParseMemoryLimit(s string) (uint64, error) {
	if s == unlimited {
		return 0, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w, or max for no limit", err)
	}
	if err := checkMemory(n); err != nil {
		return 0, err
	}
	return n, nil
}

// ParseCPULimit reads a --cpus value: a number of CPUs such as "1.5", at
// least MinCPUs, or "max" for no limit (0).
func ParseCPULimit(s string) (float64, error) {
	if s == unlimited {
		return 0, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number of CPUs such as 1.5, or max for no limit", s)
	}
	if err := checkCPUs(f); err != nil {
		return 0, err
	}
	return f, nil
}

// ParsePidsLimit reads a --pids value: a positive whole number, or "max"
// for no limit (0).
func ParsePidsLimit(s string) (int64, error) {
	if s == unlimited {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a positive whole number of processes, or max for no limit", s)
	}
	if err := checkPids(n); err != nil {
		return 0, err
	}
	return n, nil
}

func checkCPUs(f float64) error {
	if f < MinCPUs {
		return fmt.Errorf("must be at least %v CPUs (the kernel's smallest quota), not %v", MinCPUs, f)
	}
	if f > MaxCPUs {
		return fmt.Errorf("must be at most %d CPUs (the kernel's largest quota), not %v; max means no limit", int64(math.Floor(MaxCPUs)), f)
	}
	return nil
}

func checkMemory(n uint64) error {
	if n < MinMemoryBytes {
		return fmt.Errorf("must be at least %s (what starting a container takes before its init runs), not %s", FormatSize(MinMemoryBytes), FormatSize(n))
	}
	return nil
}

func checkPids(n int64) error {
	if n > MaxPids {
		return fmt.Errorf("must be at most %d processes (the kernel's largest limit), not %d; max means no limit", MaxPids, n)
	}
	return nil
}

// FormatSize prints a byte count with a binary unit, e.g. "64MiB" or
// "1.5GiB".
func FormatSize(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) + units[i]
}
