package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/cell"
)

func (a *app) adoptCommand() *cobra.Command {
	var req cell.AdoptRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "adopt NAME [--dry-run] [--privileged]",
		Short: "Take over a container that nixos-container made",
		Long: `Adopt takes over an imperative nixos-container container: its configuration
(/etc/nixos-containers/NAME.conf), root (/var/lib/nixos-containers/NAME) and
generations (its profile /nix/var/nix/profiles/per-container/NAME is nixcell's
own path, so every generation stays). The root moves into nixcell's state
directory and its files, owned by the host's root under nixos-container, are
shifted into a new ID range; with --privileged they stay as they are and the
container keeps running as the host's root, as before. Its addresses and port
forwards are kept. A configuration nixcell cannot honour (extra nspawn flags,
moved host interfaces) is refused with the list. Stop the container first
(nixos-container stop NAME). --dry-run shows what would change.

Later updates need a source (update NAME CONFIG.nix, --flake or --system):
nixcell does not evaluate the configuration inside the container's root,
which the container can write.`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			m, err := a.manager()
			if err != nil {
				return err
			}
			plan, err := m.Adopt(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, plan)
			}
			verb := "adopted"
			if req.DryRun {
				verb = "would adopt"
			}
			fmt.Fprintf(a.stdout, "%s %s:\n", verb, plan.Name)
			fmt.Fprintf(a.stdout, "  root         %s -> %s (%d files)\n", plan.From, plan.To, plan.Files)
			switch {
			case plan.Privileged:
				fmt.Fprintf(a.stdout, "  owners       kept (privileged: its root is the host's root)\n")
			case plan.IDs != nil:
				fmt.Fprintf(a.stdout, "  owners       shifted into %d-%d\n", plan.IDs.Start, plan.IDs.Start+plan.IDs.Size-1)
			default:
				fmt.Fprintf(a.stdout, "  owners       shifted into a new ID range\n")
			}
			fmt.Fprintf(a.stdout, "  generations  %s (current %d)\n", ints(plan.Generations), plan.Current)
			if len(plan.UserProfiles) > 0 {
				fmt.Fprintf(a.stdout, "  user profiles %s -> the container's own place\n", strings.Join(plan.UserProfiles, ", "))
			}
			fmt.Fprintf(a.stdout, "  configuration %s -> %s.adopted-by-nixcell\n", plan.ConfFile, plan.ConfFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&req.DryRun, "dry-run", false, "show what would change, change nothing")
	f.BoolVar(&req.Privileged, "privileged", false, "keep the root's owners: container root stays the host's root")
	f.StringVar(&req.ConfFile, "conf", "", "nixos-container's configuration file (default /etc/nixos-containers/NAME.conf)")
	f.StringVar(&req.Root, "root", "", "its root (default /var/lib/nixos-containers/NAME)")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

func ints(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, " ")
}
