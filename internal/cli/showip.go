package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) showIPCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show-ip NAME",
		Short: "Print the container's addresses",
		Long: `Show-ip prints the container's IPv4 and IPv6 addresses, one per line (those
of its "internet" interface follow when it has one). They are assigned at create
and kept until destroy.`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			addrs, err := m.ShowIP(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, addrs)
			}
			if addrs.HostNetwork {
				fmt.Fprintln(a.stdout, "host network")
				return nil
			}
			for _, s := range []string{addrs.IPv4, addrs.IPv6, addrs.NATIPv4, addrs.NATIPv6} {
				if s != "" {
					fmt.Fprintln(a.stdout, s)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
