package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) networkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Inspect nixcell's managed network",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the managed bridges and nftables tables as the kernel has them",
		Long: `Status shows each managed bridge (whether it exists and is up, its addresses,
any it should have but lacks, the container interfaces on it), whether
nixcell's nftables tables are loaded, the NAT uplink and IPv4 forwarding. The
next start of a container repairs what is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			st, err := m.NetworkStatus()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, st)
			}
			for _, b := range st.Bridges {
				state := "absent"
				if b.Exists {
					state = map[bool]string{true: "up", false: "down"}[b.Up]
				}
				fmt.Fprintf(a.stdout, "bridge %s (%s): %s, %d ports", b.Name, strings.Join(b.Subnets, " "), state, b.Ports)
				if len(b.Addresses) > 0 {
					fmt.Fprintf(a.stdout, ", %s", strings.Join(b.Addresses, " "))
				}
				if b.Exists && len(b.Missing) > 0 {
					fmt.Fprintf(a.stdout, " (missing %s)", strings.Join(b.Missing, " "))
				}
				fmt.Fprintln(a.stdout)
			}
			fmt.Fprintf(a.stdout, "nftables: table inet %s %s\n", st.Table, map[bool]string{true: "loaded", false: "absent"}[st.TablesPresent])
			fmt.Fprintf(a.stdout, "uplink: %s, IPv4 forwarding: %t\n", orDash(st.Uplink), st.IPv4Forward)
			fmt.Fprintf(a.stdout, "containers: %d with addresses, %d with their network up\n", st.Containers, st.Active)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(status)
	return cmd
}
