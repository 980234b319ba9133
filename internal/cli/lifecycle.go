package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/trace"
)

func (a *app) startCommand() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "start NAME [--wait [--timeout 90s]]",
		Short: "Boot the container in the background",
		Long: `Start boots the container's current generation with its init as PID 1 in new
namespaces and returns once the init runs. No nixcell process stays behind.

With --wait it returns once the container is ready: when its init reports
READY=1 on $NOTIFY_SOCKET (systemd does, so a NixOS system or a --rootfs
container whose init is systemd), or as soon as the init runs for an init
that does not report. If it is not ready within --timeout, start fails and
the container keeps running; if its init exits first, start fails and the
container is stopped.`,
		Args: nameArg(0),
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "return once the container is ready (READY=1 from systemd)")
	var traced bool
	cmd.Flags().BoolVar(&traced, "trace", false, "print each phase of the start with its duration (also NIXCELL_TRACE=1)")
	d := durationValue(cell.DefaultStartTimeout)
	cmd.Flags().VarP(&d, "timeout", "t", "with --wait: how long to wait for readiness (e.g. 30s, 2m, or seconds)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !wait && cmd.Flags().Changed("timeout") {
			return usageError{errors.New("--timeout goes with --wait")}
		}
		ctx := cmd.Context()
		var tr *trace.Trace
		if traced || os.Getenv("NIXCELL_TRACE") == "1" {
			tr = trace.New(a.stderr)
			ctx = trace.With(ctx, tr)
			defer tr.Done()
		}
		m, err := a.manager()
		if err != nil {
			return err
		}
		tr.Mark("instance opened")
		if !wait {
			return m.Start(ctx, args[0])
		}
		return m.StartWait(ctx, args[0], time.Duration(d))
	}
	return cmd
}

// timeoutFlag adds --timeout (a duration, or plain seconds as in
// nixos-container) and returns where its value lands.
func timeoutFlag(cmd *cobra.Command) *durationValue {
	d := durationValue(cell.DefaultStopTimeout)
	cmd.Flags().VarP(&d, "timeout", "t", "how long to wait for a clean shutdown before killing (e.g. 30s, 2m, or seconds)")
	return &d
}

type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Type() string   { return "duration" }
func (d *durationValue) Set(s string) error {
	var secs uint
	if _, err := fmt.Sscanf(s, "%d", &secs); err == nil && fmt.Sprint(secs) == s {
		*d = durationValue(time.Duration(secs) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration such as 30s or 2m", s)
	}
	*d = durationValue(v)
	return nil
}

func (a *app) stopCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stop NAME",
		Short: "Shut the container down cleanly (killed after --timeout)",
		Long: `Stop sends the init SIGRTMIN+3, systemd's halt signal, and waits for it to
exit; if it is still running at the timeout, the container is killed. A signal
sent before the init can handle it would be lost, so it is sent once the init
has installed its handler.`,
		Args: nameArg(0),
	}
	timeout := timeoutFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		res, err := m.Stop(cmd.Context(), args[0], time.Duration(*timeout))
		if err != nil {
			return err
		}
		if !res.Clean && !a.quiet {
			why := "it did not exit"
			if !res.Signalled {
				why = "its init never handled the stop signal"
			}
			fmt.Fprintf(a.stderr, "nixcell: stop %s: killed after %v: %s\n", args[0], time.Duration(*timeout), why)
		}
		return nil
	}
	return cmd
}

func (a *app) terminateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "terminate NAME",
		Short: "Kill the container at once",
		Args:  nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			return m.Terminate(cmd.Context(), args[0])
		},
	}
}

func (a *app) restartCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop the container if it runs, then start it",
		Args:  nameArg(0),
	}
	timeout := timeoutFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		return m.Restart(cmd.Context(), args[0], time.Duration(*timeout))
	}
	return cmd
}

func (a *app) destroyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "destroy NAME",
		Short: "Stop the container and remove everything of it",
		Long: `Destroy stops the container if it runs (cleanly, killed after --timeout) and
removes its root file system, state, Nix profile and GC roots, and ID range.
It also finishes off a container whose create was interrupted.`,
		Args: nameArg(0),
	}
	timeout := timeoutFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		return m.Destroy(cmd.Context(), args[0], time.Duration(*timeout))
	}
	return cmd
}

func (a *app) runCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Boot the container in the foreground until its init exits",
		Long: `Run boots the container like start, but stays in the foreground with the
container's console on stdout (what its init and, for systemd, its boot
and getty write there), and exits with the init's exit status: 0 for a halt
or power off, 133 for a reboot, 128+N when signal N killed it (and a message
when that was the kernel's OOM killer). When stdin is a terminal it is the
console's keyboard: keys go to the container, and ^] pressed three times
within a second stops it. SIGTERM or SIGINT shut the container down as stop
does. This is the form for a service manager (one unit per container): under
a unit of Type=notify it passes readiness through (READY=1 once the container
is ready, as start --wait defines it, and STOPPING=1 when asked to stop).`,
		Args: nameArg(0),
	}
	timeout := timeoutFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return &exitError{code: exitRuntime, err: err}
		}
		stop := notifyStop()
		if term.IsTerminal(int(os.Stdin.Fd())) && !a.quiet {
			fmt.Fprintf(a.stderr, "%s: its console; press ^] three times within 1s to stop it\n", args[0])
		}
		exit, err := m.Run(cmd.Context(), args[0], stdio(), stop, time.Duration(*timeout))
		if err != nil {
			return &exitError{code: exitRuntime, err: err}
		}
		if exit.OOMKilled {
			return &exitError{code: exit.Code, err: fmt.Errorf("its init was killed by the OOM killer (exit status %d): it reached its memory limit (limits.memory)", exit.Code)}
		}
		return exitStatus(exit.Code)
	}
	return cmd
}

func exitStatus(code int) error {
	if code == 0 {
		return nil
	}
	return &exitError{code: code}
}
