package cell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/runtime"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

// StartOptions are what a program that runs containers on behalf of
// another scheduler (the Nomad driver) decides about one start, beyond the
// container's own settings. Nothing of them is recorded: they hold for
// this run of the init only.
type StartOptions struct {
	// Stdout and Stderr receive the init's output instead of the console
	// log; they are handed to the init, so they outlive the caller.
	Stdout, Stderr *os.File
	// NetNS is the path of a network namespace that someone else made and
	// configured (a Nomad allocation's): the container joins it and gets
	// none of nixcell's networking.
	NetNS string
	// ForwardPorts are forwarded besides the container's own
	// network.forwardPorts (the ports Nomad allocated).
	ForwardPorts []spec.PortForward
	// Binds are mounted besides the container's own bind mounts.
	Binds []runtime.Bind
	// Env is added to the init's environment.
	Env []string
}

// Init identifies a container's init process.
type Init struct {
	Pid       int
	StartedAt time.Time
}

// StartWith boots the container detached, as Start does, with opts, and
// returns its init, which may have exited already. The caller stays the
// init's parent while it lives, so runtime.WaitInit gives it the init's
// exit status.
func (m *Manager) StartWith(ctx context.Context, name string, opts StartOptions) (Init, error) {
	rec, _, unlock, err := m.locked(ctx, name, lifecycle.Start)
	if err != nil {
		return Init{}, err
	}
	defer unlock()
	if err := m.startHosted(ctx, rec, opts); err != nil {
		return Init{}, err
	}
	var init Init
	if init.Pid, init.StartedAt, err = runtime.InitOf(m.Store.RuntimeRoot(), name); err != nil {
		return Init{}, fmt.Errorf("finding the init of %s: %w", name, err)
	}
	return init, nil
}

// startHosted boots rec with opts. Preconditions: the container's lock is
// held and it is not running.
func (m *Manager) startHosted(ctx context.Context, rec *state.Container, opts StartOptions) error {
	var c *runtime.Container
	var err error
	if opts.NetNS != "" {
		if c, err = m.runtimeContainer(rec); err != nil {
			return err
		}
		if err := runtime.Cleanup(m.Store.RuntimeRoot(), rec.Name); err != nil {
			return err
		}
		if err := m.Store.RemoveRunning(rec.Name); err != nil {
			return err
		}
		c.NetNS = opts.NetNS
	} else {
		if len(opts.ForwardPorts) > 0 {
			r := *rec
			r.Spec.Network.ForwardPorts = append(slices.Clone(rec.Spec.Network.ForwardPorts), opts.ForwardPorts...)
			if err := r.Spec.Validate(); err != nil {
				return err
			}
			err := m.Net.Update(ctx, func(st *network.State) error { return st.ClaimPorts(r.Name, r.Spec.Network.ForwardPorts) })
			if err != nil {
				return fmt.Errorf("network: %w", err)
			}
			rec = &r
		}
		if c, err = m.prepareStart(ctx, rec); err != nil {
			return err
		}
	}
	c.Stdout, c.Stderr = opts.Stdout, opts.Stderr
	c.Binds = append(c.Binds, opts.Binds...)
	c.Env = append(c.Env, opts.Env...)
	if err := c.Start(); err != nil {
		if serr := m.syncNetwork(ctx, rec.Name, true); serr != nil {
			m.warnf("%v", serr)
		}
		return err
	}
	return m.recordRunning(rec.Name)
}

// Signal sends sig to the running container's init. It takes no lock, as
// exec.
func (m *Manager) Signal(name string, sig unix.Signal) error {
	if err := spec.ValidateName(name); err != nil {
		return err
	}
	rec, err := m.Store.Load(name)
	if err != nil {
		return err
	}
	if rec.Phase != state.Created {
		return lifecycle.Check(lifecycle.Creating, lifecycle.Stop)
	}
	err = runtime.Signal(m.Store.RuntimeRoot(), name, sig)
	if errors.Is(err, runtime.ErrNotRunning) {
		return lifecycle.Check(lifecycle.Stopped, lifecycle.Stop)
	}
	return err
}
