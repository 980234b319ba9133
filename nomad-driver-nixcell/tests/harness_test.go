package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/drivers/testutils"
)

// taskConfig is the driver's task configuration (its TaskConfig; this
// module cannot import the driver).
type taskConfig struct {
	System     string   `codec:"system"`
	Flake      string   `codec:"flake"`
	ConfigFile string   `codec:"config_file"`
	Config     string   `codec:"config"`
	NixArgs    []string `codec:"nix_args"`
	Privileged bool     `codec:"privileged"`
	Pids       int64    `codec:"pids"`
}

// newTask is a task of a new allocation with 256 MiB of memory.
func newTask(t *testing.T, name string, tc taskConfig) *drivers.TaskConfig {
	t.Helper()
	alloc := randomID()
	task := &drivers.TaskConfig{
		ID: alloc + "/" + name + "/1", AllocID: alloc, Name: name, JobName: "test", TaskGroupName: "group",
		Resources: &drivers.Resources{
			NomadResources: &structs.AllocatedTaskResources{
				Cpu:    structs.AllocatedCpuResources{CpuShares: 100},
				Memory: structs.AllocatedMemoryResources{MemoryMB: 256},
			},
			LinuxResources: &drivers.LinuxResources{MemoryLimitBytes: 256 << 20, CPUShares: 100},
		},
	}
	if err := task.EncodeConcreteDriverConfig(&tc); err != nil {
		t.Fatal(err)
	}
	return task
}

// harness starts a plugin process of in and Nomad's driver harness on it.
func (in *instance) harness() (*testutils.DriverHarness, *pluginProc) {
	p := in.startPlugin()
	return testutils.NewDriverHarness(in.t, p.driver), p
}

// waitExit waits for the task's exit.
func waitExit(t *testing.T, h *testutils.DriverHarness, taskID string, timeout time.Duration) *drivers.ExitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ch, err := h.WaitTask(ctx, taskID)
	if err != nil {
		t.Fatalf("WaitTask: %v", err)
	}
	select {
	case res := <-ch:
		if res == nil {
			t.Fatal("WaitTask: no result")
		}
		return res
	case <-ctx.Done():
		t.Fatalf("task %s did not exit within %v", taskID, timeout)
		return nil
	}
}

// taskLog reads the task's stdout or stderr as Nomad's log collector
// wrote it.
func taskLog(task *drivers.TaskConfig, stream string) string {
	data, _ := os.ReadFile(filepath.Join(task.TaskDir().LogDir, task.Name+"."+stream+".0"))
	return string(data)
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}

func TestFingerprint(t *testing.T) {
	in := newInstance(t)
	h, _ := in.harness()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fp := <-ch
	if fp.Health != drivers.HealthStateHealthy {
		t.Fatalf("health %s: %s", fp.Health, fp.HealthDescription)
	}
	v, ok := fp.Attributes["driver.nixcell.version"]
	if !ok || v.GoString() == "" {
		t.Fatalf("no driver.nixcell.version attribute: %v", fp.Attributes)
	}
	t.Logf("driver.nixcell.version = %s", v.GoString())
}

// TestBatchTask: a system whose init exits by itself with status 3; its
// output reaches Nomad's log files.
func TestBatchTask(t *testing.T) {
	in := newInstance(t)
	h, _ := in.harness()
	task := newTask(t, "batch", taskConfig{Config: `{ system.fixture.label = "batch"; system.fixture.exitAfter = 1; system.fixture.exitCode = 3; }`})
	defer h.MkAllocDir(task, true)()
	if _, _, err := h.StartTask(task); err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	defer h.DestroyTask(task.ID, true)
	res := waitExit(t, h, task.ID, time.Minute)
	if res.ExitCode != 3 || res.Signal != 0 || res.Err != nil {
		t.Errorf("exit: %+v, want exit code 3", res)
	}
	status, err := h.InspectTask(task.ID)
	if err != nil || status.State != drivers.TaskStateExited || status.ExitResult.ExitCode != 3 {
		t.Errorf("InspectTask: %+v, %v", status, err)
	}
	eventually(t, 10*time.Second, "the init's output in the task's stdout log", func() bool {
		return strings.Contains(taskLog(task, "stdout"), "fixture: exit code=3")
	})
	if !strings.Contains(taskLog(task, "stdout"), "fixture: start label=batch") {
		t.Errorf("stdout log lacks the start line:\n%s", taskLog(task, "stdout"))
	}
	if err := h.DestroyTask(task.ID, false); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
	if c := in.containers(); len(c) != 0 {
		t.Errorf("containers left after DestroyTask: %v", c)
	}
}

// TestServiceTask: a long-running system: inspect, exec (plain and
// streaming, with a terminal), stats, signal, a clean stop and destroy.
func TestServiceTask(t *testing.T) {
	in := newInstance(t)
	h, _ := in.harness()
	task := newTask(t, "web", taskConfig{Config: `{ system.fixture.label = "web1"; services.httpd.enable = true; }`, Pids: 500})
	defer h.MkAllocDir(task, true)()
	if _, _, err := h.StartTask(task); err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	defer h.DestroyTask(task.ID, true)
	if err := h.WaitUntilStarted(task.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// The task runs once its init does; the system's activation (which
	// writes /etc) follows, and an exec can come first.
	var res *drivers.ExecTaskResult
	var err error
	eventually(t, 10*time.Second, "ExecTask cat label to say web1", func() bool {
		res, err = h.ExecTask(task.ID, []string{"cat", "/etc/nixcell-fixture/label"}, 10*time.Second)
		return err == nil && res.ExitResult.ExitCode == 0 && strings.TrimSpace(string(res.Stdout)) == "web1"
	})
	start := time.Now()
	res, err = h.ExecTask(task.ID, []string{"sleep", "30"}, time.Second)
	if err != nil || res.ExitResult.ExitCode != 128+9 || time.Since(start) > 10*time.Second {
		t.Errorf("ExecTask past its timeout: %+v, %v after %v, want killed after 1s", res, err, time.Since(start))
	}
	// The limits in the container's cgroup: Nomad's memory and the task's pids.
	out, err := in.nixcell("stats", "--json", containerOf(task))
	var st struct {
		Memory struct{ LimitBytes uint64 }
		Pids   struct{ Limit uint64 }
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	if err != nil || st.Memory.LimitBytes != 256<<20 || st.Pids.Limit != 500 {
		t.Errorf("limits: %+v, %v (%s), want memory 256 MiB and 500 pids", st, err, out)
	}

	testutils.TestExecTaskStreamingBasicResponses(t, h, task.ID)

	// A busy loop for 2 s while the statistics are read.
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		_, _ = h.ExecTask(task.ID, []string{"sh", "-c", "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done"}, 10*time.Second)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	stats, err := h.TaskStats(ctx, task.ID, 250*time.Millisecond)
	if err != nil {
		t.Fatalf("TaskStats: %v", err)
	}
	var mem uint64
	var cpu, mhz float64
	for range 6 {
		u := <-stats
		mem = max(mem, u.ResourceUsage.MemoryStats.Usage)
		cpu, mhz = max(cpu, u.ResourceUsage.CpuStats.Percent), max(mhz, u.ResourceUsage.CpuStats.TotalTicks)
	}
	cancel()
	<-busy
	t.Logf("stats: memory %d bytes, cpu up to %.0f%% (%.0f MHz)", mem, cpu, mhz)
	if mem == 0 || cpu < 20 || mhz == 0 {
		t.Errorf("TaskStats: memory %d bytes, cpu %.0f%%, %.0f MHz; want use while a loop spins", mem, cpu, mhz)
	}

	// The init has no handler for SIGUSR1 and, as PID 1, ignores it.
	if err := h.SignalTask(task.ID, "SIGUSR1"); err != nil {
		t.Errorf("SignalTask: %v", err)
	}
	if err := h.DestroyTask(task.ID, false); err == nil {
		t.Error("DestroyTask without force removed a running task")
	}
	if err := h.StopTask(task.ID, 10*time.Second, ""); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	if res := waitExit(t, h, task.ID, 15*time.Second); !res.Successful() {
		t.Errorf("exit after a clean stop: %+v", res)
	}
	eventually(t, 10*time.Second, "the stop in the task's stdout log", func() bool {
		return strings.Contains(taskLog(task, "stdout"), "fixture: stop signal=RTMIN+3")
	})
	if err := h.DestroyTask(task.ID, false); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
	if c := in.containers(); len(c) != 0 {
		t.Errorf("containers left after DestroyTask: %v", c)
	}
}

// TestStopSignal: a stop with a signal of the job's (kill_signal) and a
// stop whose init ignores the signal, killed at the timeout.
func TestStopSignal(t *testing.T) {
	in := newInstance(t)
	for _, c := range []struct {
		name, config, signal string
		want                 drivers.ExitResult
	}{
		{"term", `{ }`, "SIGTERM", drivers.ExitResult{}},
		{"deaf", `{ system.fixture.ignoreStopSignals = true; }`, "", drivers.ExitResult{ExitCode: 137, Signal: 9}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := in.harness()
			task := newTask(t, c.name, taskConfig{Config: c.config})
			defer h.MkAllocDir(task, true)()
			if _, _, err := h.StartTask(task); err != nil {
				t.Fatalf("StartTask: %v", err)
			}
			defer h.DestroyTask(task.ID, true)
			// The fixture's init installs its handlers a moment after it starts.
			eventually(t, 10*time.Second, "the init is up", func() bool {
				return strings.Contains(taskLog(task, "stdout"), "fixture: start")
			})
			if err := h.StopTask(task.ID, 2*time.Second, c.signal); err != nil {
				t.Fatalf("StopTask: %v", err)
			}
			res := waitExit(t, h, task.ID, 15*time.Second)
			if res.ExitCode != c.want.ExitCode || res.Signal != c.want.Signal {
				t.Errorf("exit: %+v, want %+v", res, c.want)
			}
		})
	}
}

// TestRecoverTask: the plugin process dies; the container keeps running;
// a new plugin process recovers the task from its handle, and stops it.
func TestRecoverTask(t *testing.T) {
	in := newInstance(t)
	h, p := in.harness()
	task := newTask(t, "recover", taskConfig{Config: `{ system.fixture.label = "recover"; }`})
	defer h.MkAllocDir(task, true)()
	handle, _, err := h.StartTask(task)
	if err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	status, err := h.InspectTask(task.ID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the init's start in the task's log", func() bool {
		return strings.Contains(taskLog(task, "stdout"), "fixture: start")
	})
	p.client.Kill()

	h2, _ := in.harness()
	if err := h2.RecoverTask(handle); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	defer h2.DestroyTask(task.ID, true)
	status2, err := h2.InspectTask(task.ID)
	if err != nil || status2.State != drivers.TaskStateRunning || status2.StartedAt != status.StartedAt {
		t.Fatalf("InspectTask after recovery: %+v, %v (before: %+v)", status2, err, status)
	}
	res, err := h2.ExecTask(task.ID, []string{"cat", "/etc/nixcell-fixture/label"}, 10*time.Second)
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "recover" {
		t.Errorf("ExecTask after recovery: %+v, %v", res, err)
	}
	if strings.Count(taskLog(task, "stdout"), "fixture: start") != 1 {
		t.Errorf("the container was restarted:\n%s", taskLog(task, "stdout"))
	}
	if err := h2.StopTask(task.ID, 10*time.Second, ""); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	if res := waitExit(t, h2, task.ID, 15*time.Second); !res.Successful() {
		t.Errorf("exit after a clean stop of a recovered task: %+v", res)
	}
	if err := h2.DestroyTask(task.ID, false); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
}

// TestPorts: Nomad's allocated port reaches the container's web server
// through nixcell's forward.
func TestPorts(t *testing.T) {
	in := newInstance(t)
	h, _ := in.harness()
	task := newTask(t, "ports", taskConfig{Config: `{ services.httpd.enable = true; services.httpd.text = "hello nomad\n"; }`})
	port := freePort(t)
	task.Resources.Ports = &structs.AllocatedPorts{{Label: "http", Value: port, To: 80, HostIP: "127.0.0.1"}}
	defer h.MkAllocDir(task, true)()
	_, network, err := h.StartTask(task)
	if err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	defer h.DestroyTask(task.ID, true)
	if network == nil || network.IP == "" || network.PortMap["http"] != 80 {
		t.Errorf("driver network: %+v", network)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var body string
	eventually(t, 15*time.Second, "GET "+url, func() bool {
		c := http.Client{Timeout: time.Second}
		r, err := c.Get(url)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		return true
	})
	if body != "hello nomad\n" {
		t.Errorf("GET %s: %q", url, body)
	}
}

// TestGroupNetwork: with Nomad's network namespace (bridge mode), the
// container joins it.
func TestGroupNetwork(t *testing.T) {
	in := newInstance(t)
	h, _ := in.harness()
	ns := "nixcell-nomad-" + randomID()[:8]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "addr", "add", "192.0.2.7/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	task := newTask(t, "netns", taskConfig{Config: `{ }`})
	task.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeGroup, Path: "/var/run/netns/" + ns}
	defer h.MkAllocDir(task, true)()
	_, network, err := h.StartTask(task)
	if err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	defer h.DestroyTask(task.ID, true)
	if network != nil {
		t.Errorf("driver network in a group network: %+v", network)
	}
	res, err := h.ExecTask(task.ID, []string{"ip", "-4", "addr", "show", "dev", "lo"}, 10*time.Second)
	if err != nil || !strings.Contains(string(res.Stdout), "192.0.2.7") {
		t.Errorf("the container's lo has not the namespace's address: %+v, %v", res, err)
	}
}

// containerOf is the name of the task's container.
func containerOf(task *drivers.TaskConfig) string {
	return "nomad-" + task.AllocID[:8] + "-" + task.Name
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
