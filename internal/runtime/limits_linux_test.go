package runtime

import (
	"testing"

	"github.com/opencontainers/cgroups"
)

func TestLimitsApply(t *testing.T) {
	var r cgroups.Resources
	Limits{}.apply(&r, false)
	if r.Memory != 0 || r.CpuQuota != 0 || r.CpuPeriod != 0 || r.PidsLimit != nil {
		t.Errorf("no limits on a new cgroup wrote %+v", r)
	}
	Limits{}.apply(&r, true)
	if r.Memory != -1 || r.CpuQuota != -1 || r.CpuPeriod != cpuPeriod || r.PidsLimit == nil || *r.PidsLimit != -1 {
		t.Errorf("lifting every limit: %+v", r)
	}
	Limits{MemoryBytes: 64 << 20, CPUs: 1.5, Pids: 64}.apply(&r, false)
	if r.Memory != 64<<20 || r.CpuQuota != 150_000 || r.CpuPeriod != cpuPeriod || r.PidsLimit == nil || *r.PidsLimit != 64 {
		t.Errorf("limits: %+v", r)
	}
	if swapAccounting() && r.MemorySwap != r.Memory {
		t.Errorf("swap not counted against memory: %d vs %d", r.MemorySwap, r.Memory)
	}
}
