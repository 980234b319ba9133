// Package driver is the Nomad task driver that runs nixcell containers: a
// task is one container, made from a NixOS system (a store path, a flake
// or a nixcell configuration) when the task starts and removed when it is
// destroyed, in the driver's own nixcell state directory. It speaks
// nixcell's library, never its command line, and Nomad's plugin SDK.
package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"
	pstructs "github.com/hashicorp/nomad/plugins/shared/structs"
)

// PluginName is the driver's name in job files (driver = "nixcell").
const PluginName = "nixcell"

// Version is nixcell's version, set when the plugin is built
// (-ldflags "-X .../driver.Version=..."); Nomad wants a semantic version.
var Version = "0.0.0-devel"

const (
	// taskHandleVersion is the version of taskState kept by Nomad.
	taskHandleVersion = 1
	fingerprintPeriod = 30 * time.Second
)

// capabilities: signals and exec; the task sees its own root (an image,
// as far as Nomad's paths go); its network is nixcell's own (Nomad's
// "host" mode: the driver's default) or the allocation's namespace.
var capabilities = &drivers.Capabilities{
	SendSignals:       true,
	Exec:              true,
	FSIsolation:       drivers.FSIsolationImage,
	NetIsolationModes: []drivers.NetIsolationMode{drivers.NetIsolationModeHost, drivers.NetIsolationModeGroup},
	MountConfigs:      drivers.MountConfigSupportAll,
}

var (
	_ drivers.DriverPlugin            = (*Driver)(nil)
	_ drivers.ExecTaskStreamingDriver = (*Driver)(nil)
)

// Driver is the nixcell task driver.
type Driver struct {
	logger hclog.Logger
	events events
	tasks  tasks

	// ctx is the context of the driver's own work (Nomad's calls carry
	// none); it never ends: the plugin's process does.
	ctx context.Context

	mu     sync.RWMutex
	config Config
}

// New returns the driver.
func New(logger hclog.Logger) *Driver {
	return &Driver{
		logger: logger.Named(PluginName),
		tasks:  tasks{m: map[string]*taskHandle{}},
		ctx:    context.Background(),
		config: Config{StateDir: DefaultStateDir},
	}
}

func (d *Driver) PluginInfo() (*base.PluginInfoResponse, error) {
	return &base.PluginInfoResponse{
		Type:              base.PluginTypeDriver,
		PluginApiVersions: []string{drivers.ApiVersion010},
		PluginVersion:     Version,
		Name:              PluginName,
	}, nil
}

func (d *Driver) ConfigSchema() (*hclspec.Spec, error) { return configSpec, nil }

func (d *Driver) SetConfig(c *base.Config) error {
	cfg := Config{StateDir: DefaultStateDir}
	if c != nil && len(c.PluginConfig) > 0 {
		if err := base.MsgPackDecode(c.PluginConfig, &cfg); err != nil {
			return fmt.Errorf("reading the nixcell plugin's configuration: %w", err)
		}
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return fmt.Errorf("state_dir %q must be an absolute path", cfg.StateDir)
	}
	if _, err := cfg.network(); err != nil {
		return err
	}
	d.mu.Lock()
	d.config = cfg
	d.mu.Unlock()
	return nil
}

func (d *Driver) pluginConfig() Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.config
}

func (d *Driver) TaskConfigSchema() (*hclspec.Spec, error) { return taskConfigSpec, nil }

func (d *Driver) Capabilities() (*drivers.Capabilities, error) { return capabilities, nil }

// Fingerprint reports, now and every 30 seconds, whether the host can run
// nixcell containers and nixcell's version.
func (d *Driver) Fingerprint(ctx context.Context) (<-chan *drivers.Fingerprint, error) {
	ch := make(chan *drivers.Fingerprint)
	go func() {
		defer close(ch)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.ctx.Done():
				return
			case <-t.C:
				t.Reset(fingerprintPeriod)
			}
			select {
			case ch <- d.fingerprint():
			case <-ctx.Done():
				return
			case <-d.ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (d *Driver) fingerprint() *drivers.Fingerprint {
	fp := &drivers.Fingerprint{
		Attributes: map[string]*pstructs.Attribute{
			"driver.nixcell.version":   pstructs.NewStringAttribute(Version),
			"driver.nixcell.state_dir": pstructs.NewStringAttribute(d.pluginConfig().StateDir),
		},
		Health:            drivers.HealthStateHealthy,
		HealthDescription: drivers.DriverHealthy,
	}
	if problems := checkHost(); len(problems) > 0 {
		fp.Health = drivers.HealthStateUnhealthy
		fp.HealthDescription = strings.Join(problems, "; ")
	}
	return fp
}

func (d *Driver) TaskEvents(ctx context.Context) (<-chan *drivers.TaskEvent, error) {
	return d.events.subscribe(ctx), nil
}

func (d *Driver) event(cfg *drivers.TaskConfig, msg string) {
	d.events.emit(&drivers.TaskEvent{
		TaskID: cfg.ID, TaskName: cfg.Name, AllocID: cfg.AllocID, Timestamp: time.Now(), Message: msg,
	})
}

// StartTask makes the task's container (building its system) and boots
// it.
func (d *Driver) StartTask(cfg *drivers.TaskConfig) (*drivers.TaskHandle, *drivers.DriverNetwork, error) {
	if _, ok := d.tasks.get(cfg.ID); ok {
		return nil, nil, fmt.Errorf("task %s is already started", cfg.ID)
	}
	var tc TaskConfig
	if err := cfg.DecodeDriverConfig(&tc); err != nil {
		return nil, nil, fmt.Errorf("reading the task's config: %w", err)
	}
	src, err := tc.source(cfg.TaskDir().Dir)
	if err != nil {
		return nil, nil, err
	}
	conf := d.pluginConfig()
	if tc.Privileged && !conf.AllowPrivileged {
		return nil, nil, errors.New("privileged = true needs allow_privileged = true in the nixcell plugin's configuration")
	}
	c := cells{dir: conf.StateDir}
	c.net, _ = conf.network() // checked by SetConfig
	name := containerName(cfg.AllocID, cfg.Name)

	stdout, stderr, err := openLogs(cfg)
	if err != nil {
		return nil, nil, err
	}
	defer stdout.Close()
	defer stderr.Close()

	// A container of this name is the same task's, left by a start that
	// did not finish (the plugin was killed midway): it goes.
	if st, err := c.inspect(name); err != nil {
		return nil, nil, err
	} else if st.Exists {
		if err := c.destroy(d.ctx, name); err != nil {
			return nil, nil, fmt.Errorf("removing the leftover container %s: %w", name, err)
		}
	}

	d.event(cfg, "Building the container's system")
	req := createRequest{Name: name, Source: src, NixArgs: append(append([]string{}, conf.NixArgs...), tc.NixArgs...),
		Privileged: tc.Privileged, Limits: limitsOf(cfg, tc)}
	if err := c.create(d.ctx, req, stderr); err != nil {
		return nil, nil, fmt.Errorf("creating container %s: %w", name, err)
	}
	started := false
	defer func() {
		if !started {
			if err := c.destroy(context.Background(), name); err != nil {
				d.logger.Error("removing the container of a failed start", "container", name, "error", err)
			}
		}
	}()

	sr := startRequest{Stdout: stdout, Stderr: stderr, Env: envOf(cfg), Binds: bindsOf(cfg)}
	if ni := cfg.NetworkIsolation; ni != nil && ni.Mode == drivers.NetIsolationModeGroup && ni.Path != "" {
		sr.NetNS = ni.Path
	} else {
		sr.Forwards = forwardsOf(cfg)
	}
	d.event(cfg, "Starting the container")
	init, err := c.start(d.ctx, name, sr)
	if err != nil {
		return nil, nil, fmt.Errorf("starting container %s: %w", name, err)
	}
	st := taskState{Container: name, StateDir: conf.StateDir, Pid: init.Pid, InitStartedAt: init.StartedAt, StartedAt: time.Now()}
	var network *drivers.DriverNetwork
	if sr.NetNS == "" {
		s, err := c.inspect(name)
		if err != nil {
			return nil, nil, err
		}
		if st.IPv4 = s.IPv4; st.IPv4 != "" {
			network = &drivers.DriverNetwork{IP: st.IPv4, PortMap: portMap(cfg)}
		}
	}
	h := newHandle(cfg.ID, cfg, st)
	handle := drivers.NewTaskHandle(taskHandleVersion)
	handle.Config, handle.State = cfg, drivers.TaskStateRunning
	if err := handle.SetDriverState(&st); err != nil {
		return nil, nil, err
	}
	if !d.tasks.add(h) {
		return nil, nil, fmt.Errorf("task %s is already started", cfg.ID)
	}
	started = true
	go d.watch(h)
	return handle, network, nil
}

// openLogs opens the task's stdout and stderr FIFOs, which Nomad's log
// collector reads, for the container's init to write to.
func openLogs(cfg *drivers.TaskConfig) (stdout, stderr *os.File, err error) {
	if cfg.StdoutPath == "" || cfg.StderrPath == "" {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, nil, err
		}
		null2, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			null.Close()
			return nil, nil, err
		}
		return null, null2, nil
	}
	if stdout, err = os.OpenFile(cfg.StdoutPath, os.O_WRONLY, 0); err != nil {
		return nil, nil, fmt.Errorf("opening the task's stdout: %w", err)
	}
	if stderr, err = os.OpenFile(cfg.StderrPath, os.O_WRONLY, 0); err != nil {
		stdout.Close()
		return nil, nil, fmt.Errorf("opening the task's stderr: %w", err)
	}
	return stdout, stderr, nil
}

// watch waits for the task's init to exit and records how it ended.
func (d *Driver) watch(h *taskHandle) {
	e, err := wait(initProc{Pid: h.state.Pid, StartedAt: h.state.InitStartedAt})
	res := &drivers.ExitResult{}
	switch {
	case err != nil:
		res.Err = err
	case e.Known:
		res.ExitCode, res.Signal = e.Code, e.Signal
	default:
		if stopped := h.stopResult(); stopped != nil {
			res = stopped
		} else {
			res.Err = errors.New("the container's init ended after the plugin restarted, when it was no longer the plugin's child, so its exit status is unknown")
		}
	}
	d.logger.Debug("task exited", "task", h.id, "container", h.state.Container, "exit_code", res.ExitCode, "signal", res.Signal, "error", res.Err)
	h.finish(res)
}

func (d *Driver) RecoverTask(handle *drivers.TaskHandle) error {
	if handle == nil || handle.Config == nil {
		return errors.New("recovering a task: no task handle")
	}
	if _, ok := d.tasks.get(handle.Config.ID); ok {
		return nil
	}
	var st taskState
	if err := handle.GetDriverState(&st); err != nil {
		return fmt.Errorf("recovering task %s: reading its state: %w", handle.Config.ID, err)
	}
	s, err := cells{dir: st.StateDir}.inspect(st.Container)
	if err != nil {
		return fmt.Errorf("recovering task %s: %w", handle.Config.ID, err)
	}
	switch {
	case !s.Exists:
		return fmt.Errorf("recovering task %s: its container %s no longer exists", handle.Config.ID, st.Container)
	case !s.Running || s.Pid != st.Pid || !s.InitStartedAt.Equal(st.InitStartedAt):
		return fmt.Errorf("recovering task %s: its container %s no longer runs the task's init (pid %d)", handle.Config.ID, st.Container, st.Pid)
	}
	h := newHandle(handle.Config.ID, handle.Config, st)
	if !d.tasks.add(h) {
		return nil
	}
	go d.watch(h)
	return nil
}

func (d *Driver) WaitTask(ctx context.Context, taskID string) (<-chan *drivers.ExitResult, error) {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	ch := make(chan *drivers.ExitResult, 1)
	go func() {
		defer close(ch)
		select {
		case <-h.done:
			ch <- h.status().ExitResult
		case <-ctx.Done():
		case <-d.ctx.Done():
		}
	}()
	return ch, nil
}

// StopTask stops the container: with no signal given (or SIGRTMIN+3) as
// nixcell stop does (SIGRTMIN+3, the halt signal of systemd, once the init
// handles it); with another signal that one. Either way it is killed when
// it still runs after timeout.
func (d *Driver) StopTask(taskID string, timeout time.Duration, signal string) error {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return drivers.ErrTaskNotFound
	}
	if h.exited() {
		return nil
	}
	sig, err := parseSignal(signal, true)
	if err != nil {
		return err
	}
	first := h.beginStop()
	res, err := d.stop(h, sig, timeout)
	if first {
		h.endStop(res)
	}
	return err
}

// killed is the exit of an init that was killed at a stop's timeout.
var killed = drivers.ExitResult{ExitCode: 128 + 9, Signal: 9}

func (d *Driver) stop(h *taskHandle, sig stopSignal, timeout time.Duration) (*drivers.ExitResult, error) {
	c, name := cells{dir: h.state.StateDir}, h.state.Container
	if sig.nixcell {
		clean, err := c.stop(d.ctx, name, timeout)
		if err != nil {
			return nil, fmt.Errorf("stopping container %s: %w", name, err)
		}
		if !clean {
			return killed.Copy(), nil
		}
		return &drivers.ExitResult{}, nil
	}
	if err := c.signal(name, sig.num); err != nil && !isNotRunning(err) {
		return nil, fmt.Errorf("stopping container %s: %w", name, err)
	}
	init := initProc{Pid: h.state.Pid, StartedAt: h.state.InitStartedAt}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(init) {
			return &drivers.ExitResult{}, nil
		}
	}
	if err := c.terminate(d.ctx, name); err != nil {
		return nil, fmt.Errorf("killing container %s: %w", name, err)
	}
	return killed.Copy(), nil
}

// DestroyTask removes the task's container (killing it when force is set
// and it still runs).
func (d *Driver) DestroyTask(taskID string, force bool) error {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return d.destroyUnknown(taskID)
	}
	if !h.exited() && !force {
		return fmt.Errorf("task %s is still running; stop it first", taskID)
	}
	if err := (cells{dir: h.state.StateDir}).destroy(d.ctx, h.state.Container); err != nil {
		return fmt.Errorf("destroying container %s: %w", h.state.Container, err)
	}
	d.tasks.remove(taskID)
	return nil
}

// destroyUnknown removes the container of a task the driver does not
// know, one whose recovery failed: its name follows from the task's ID
// (ALLOC/TASK/INVOCATION). A container of that name that belongs to a
// task the driver knows stays.
func (d *Driver) destroyUnknown(taskID string) error {
	parts := strings.Split(taskID, "/")
	if len(parts) != 3 {
		return drivers.ErrTaskNotFound
	}
	name := containerName(parts[0], parts[1])
	d.tasks.mu.RLock()
	for _, h := range d.tasks.m {
		if h.state.Container == name {
			d.tasks.mu.RUnlock()
			return nil
		}
	}
	d.tasks.mu.RUnlock()
	c := cells{dir: d.pluginConfig().StateDir}
	st, err := c.inspect(name)
	if err != nil || !st.Exists {
		return err
	}
	return c.destroy(d.ctx, name)
}

func (d *Driver) InspectTask(taskID string) (*drivers.TaskStatus, error) {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	return h.status(), nil
}

func (d *Driver) SignalTask(taskID string, signal string) error {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return drivers.ErrTaskNotFound
	}
	sig, err := parseSignal(signal, false)
	if err != nil {
		return err
	}
	return cells{dir: h.state.StateDir}.signal(h.state.Container, sig.num)
}
