package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func (a *app) installUnitsCommand() *cobra.Command {
	var bin string
	cmd := &cobra.Command{
		Use:   "install-units [--bin PATH]",
		Short: "Install the nixcell@.service template on a systemd host",
		Long: `Install-units writes /etc/systemd/system/nixcell@.service, the unit that runs a
container (nixcell@NAME.service runs "nixcell run NAME"), reloads systemd and
enables the units of the containers with autostart = true. For systemd hosts
that are not NixOS; the NixOS module writes the same units itself.

The unit is Type=notify (ready when the container is: a systemd init's
READY=1, a plain init once it runs), Delegate=yes (the container's cgroup is
the unit's payload cgroup), stops cleanly within TimeoutStopSec, and
"systemctl reload nixcell@NAME" switches the container's current generation
in place. "journalctl -u nixcell@NAME" shows its console. With the units
installed, "systemctl enable nixcell@NAME" is how a container starts at boot:
create and update with autostart = true enable it, and false disables it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				bin = exe
			}
			m, err := a.manager()
			if err != nil {
				return err
			}
			path, err := m.InstallUnits(cmd.Context(), bin)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&bin, "bin", "", "the nixcell the units run (default: this one)")
	return cmd
}

func (a *app) reloadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reload NAME",
		Short: "Switch the running container's current generation in place",
		Long: `Reload runs the current generation's switch-to-configuration inside the
running container, re-activating it even when it runs that generation already,
as nixos-container's reload does. "systemctl reload nixcell@NAME" runs it.`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			res, err := m.Reload(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stderr, "%s: generation %d switched in place\n", args[0], res.Generation)
			}
			return nil
		},
	}
}
