package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) autostartCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "autostart",
		Short: "Start every stopped container that has autostart = true",
		Long: `Autostart starts, one after the other, every stopped container whose
configuration sets autostart = true, and names each one it started. It goes on
past a container that fails to start and exits 1 if any did. Run it once when
the host boots, e.g. from a systemd unit:

  [Unit]
  Description=nixcell containers with autostart = true
  After=network-online.target
  [Service]
  Type=oneshot
  RemainAfterExit=yes
  ExecStart=/usr/local/bin/nixcell autostart
  [Install]
  WantedBy=multi-user.target`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			started, err := m.Autostart(cmd.Context())
			for _, n := range started {
				fmt.Fprintln(a.stdout, n)
			}
			return err
		},
	}
}
