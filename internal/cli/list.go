package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/lifecycle"
)

type errUsage string

func (e errUsage) Error() string { return string(e) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) listCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			infos, err := m.List()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, infos)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATE\tGENERATION\tIPV4\tIPV6\tAUTOSTART")
			for _, i := range infos {
				gen := fmt.Sprint(i.Generation)
				if i.RootFS != "" {
					gen = "-" // a plain root file system has no generations
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%t\n", i.Name, i.State, gen, orDash(i.IPv4), orDash(i.IPv6), i.Autostart)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) stateCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "state NAME",
		Short: "Print whether the container is running (also as exit status)",
		Long: `State prints running, stopped or creating, and exits 0 when running, 3 when
stopped and 4 when its creation did not finish. With --json it prints the
container's details; for a stopped container that ran since its last start,
"lastExit" says how its init ended: "code" (as run's exit status), "signal",
"oomKilled" (the kernel's OOM killer ended it), and "statusKnown" (false
when only that it ended is known: before Linux 6.15 for a detached one).`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			info, err := m.Inspect(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(a.stdout, info)
			} else {
				_, err = fmt.Fprintln(a.stdout, info.State)
			}
			if err != nil {
				return err
			}
			return stateStatus(info)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func stateStatus(info cell.Info) error {
	switch info.State {
	case lifecycle.Stopped:
		return &exitError{code: exitStopped}
	case lifecycle.Creating, lifecycle.Destroying:
		return &exitError{code: exitCreate}
	}
	return nil
}

func (a *app) existsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "exists NAME",
		Short: "Tell whether the container exists (also as exit status 0 or 1)",
		Args:  nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			ok, err := m.Exists(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, map[bool]string{true: "yes", false: "no"}[ok])
			if !ok {
				return &exitError{code: exitFailed}
			}
			return nil
		},
	}
}
