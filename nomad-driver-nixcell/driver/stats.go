package driver

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// TaskStats reports the container's resource use, read from its cgroup,
// every interval until ctx ends or the task exits.
func (d *Driver) TaskStats(ctx context.Context, taskID string, interval time.Duration) (<-chan *drivers.TaskResourceUsage, error) {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	ch := make(chan *drivers.TaskResourceUsage)
	go func() {
		defer close(ch)
		c := cells{dir: h.state.StateDir}
		var prev sample
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.ctx.Done():
				return
			case <-h.done:
				return
			case <-t.C:
				t.Reset(interval)
			}
			u, err := c.stats(h.state.Container)
			if err != nil {
				if !h.exited() {
					d.logger.Warn("reading container statistics", "container", h.state.Container, "error", err)
				}
				continue
			}
			cur := sample{usage: u, at: time.Now()}
			select {
			case ch <- resourceUsage(prev, cur):
			case <-ctx.Done():
				return
			}
			prev = cur
		}
	}()
	return ch, nil
}

// sample is one reading of a container's use.
type sample struct {
	usage
	at time.Time
}

// resourceUsage is Nomad's form of cur. CPU use is in percent of one CPU
// (and the MHz that is of this host's CPUs), over the time since prev.
func resourceUsage(prev, cur sample) *drivers.TaskResourceUsage {
	mem := &drivers.MemoryStats{
		Usage:    cur.MemoryBytes,
		MaxUsage: cur.MaxMemoryBytes,
		Measured: []string{"Usage", "Max Usage"},
	}
	cpu := &drivers.CpuStats{
		ThrottledTime: cur.ThrottledNanos,
		Measured:      []string{"Throttled Time"},
	}
	if !prev.at.IsZero() {
		wall := float64(cur.at.Sub(prev.at).Nanoseconds())
		pct := func(now, before uint64) float64 {
			if now < before || wall <= 0 {
				return 0
			}
			return float64(now-before) / wall * 100
		}
		cpu.Percent = pct(cur.CPUNanos, prev.CPUNanos)
		cpu.UserMode = pct(cur.UserNanos, prev.UserNanos)
		cpu.SystemMode = pct(cur.SystemNanos, prev.SystemNanos)
		cpu.TotalTicks = cpu.Percent / 100 * cpuMHz()
		cpu.Measured = append(cpu.Measured, "Percent", "User Mode", "System Mode", "Total Ticks")
	}
	return &drivers.TaskResourceUsage{
		ResourceUsage: &drivers.ResourceUsage{MemoryStats: mem, CpuStats: cpu},
		Timestamp:     cur.at.UnixNano(),
	}
}

var (
	mhzOnce sync.Once
	mhz     float64
)

// cpuMHz is the clock of one of this host's CPUs, as Nomad counts CPU
// (0 when /proc/cpuinfo does not say).
func cpuMHz() float64 {
	mhzOnce.Do(func() {
		f, err := os.Open("/proc/cpuinfo")
		if err != nil {
			return
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), ":")
			if ok && strings.TrimSpace(k) == "cpu MHz" {
				mhz, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
				return
			}
		}
	})
	return mhz
}
