package cli

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/cell"
)

type updateCmd struct {
	*app
	expr, flake, system, nixArgs string
	restart, asJSON              bool
	limits                       limitFlags
}

func (a *app) updateCommand() *cobra.Command {
	c := &updateCmd{app: a}
	cmd := &cobra.Command{
		Use:   "update NAME [CONFIG.nix | -c EXPR | --flake REF#NAME | --system PATH [SETTINGS.nix | -c EXPR]] [-n NIX-ARGS] [--restart] [--memory SIZE] [--cpus N] [--pids N]",
		Short: "Build the container's next generation and apply it",
		Long: `Update builds a new generation from the given configuration, or, without one,
from the configuration recorded at the last create or update (re-evaluated, so
edits to the file apply). Unchanged configuration makes no new generation.
--system PATH may come with a file (or -c) of host-side settings only, as
create takes it.

A stopped container boots the new generation next time. A running one is
switched in place, as nixos-rebuild switch would: the generation's
bin/switch-to-configuration switch runs inside it. --restart reboots it
instead. If the build or the switch fails, the container stays as it was: a
failed switch is undone (the previous generation is switched back in and the
new one deleted).

Changed limits (the configuration's limits = { ... } or the flags below) are
applied to a running container at once, before the switch and without a
restart; if the kernel refuses them (a memory limit below what the container
uses now), nothing changes. A stopped container gets them at its next start.
The other host-side settings (network, bindMounts, tmpfs, ...) apply when the
container next starts; --restart restarts a running one with them.

A plain root container (create --rootfs) has no generations: update takes a
settings file or -c EXPR of host-side settings only (or none, to re-read the
recorded one), and the limit flags.

` + limitFlagsHelp,
		Example: `  nixcell update web                    # re-evaluate the recorded configuration
  nixcell update web ./web.nix --restart
  nixcell update web --memory 1G --pids max`,
		Args: nameArg(1),
		RunE: c.run,
	}
	f := cmd.Flags()
	f.StringVarP(&c.expr, "config", "c", "", "inline configuration expression")
	f.StringVar(&c.flake, "flake", "", "flake REF#NAME whose nixosConfigurations.NAME to build")
	f.StringVar(&c.system, "system", "", "prebuilt NixOS system store path")
	f.StringVarP(&c.nixArgs, "nix-args", "n", "", "extra Nix arguments (replace the recorded ones)")
	f.BoolVar(&c.restart, "restart", false, "reboot a running container instead of switching it in place")
	f.BoolVar(&c.asJSON, "json", false, "print the result as JSON")
	c.limits.add(cmd)
	return cmd
}

func (c *updateCmd) run(cmd *cobra.Command, args []string) error {
	req := cell.UpdateRequest{Name: args[0], Expr: c.expr, Flake: c.flake, SystemPath: c.system, Restart: c.restart}
	if len(args) > 1 {
		req.ConfigFile = args[1]
	}
	if cmd.Flags().Changed("nix-args") {
		var err error
		if req.NixArgs, err = splitArgs(c.nixArgs); err != nil {
			return usageError{err}
		}
		req.SetNixArgs = true
	}
	var err error
	if req.Limits, err = c.limits.overrides(cmd); err != nil {
		return err
	}
	m, err := c.manager()
	if err != nil {
		return err
	}
	res, err := m.Update(cmd.Context(), req)
	if err != nil {
		return err
	}
	return c.report(args[0], res, c.asJSON)
}

// report prints the outcome of a generation change: JSON on stdout, or a
// line for people on stderr.
func (a *app) report(name string, res cell.ChangeResult, asJSON bool) error {
	if asJSON {
		return printJSON(a.stdout, res)
	}
	if a.quiet {
		return nil
	}
	if res.Generation == 0 {
		// A plain root container: it has no generations, only settings.
		how := map[cell.Applied]string{
			cell.AppliedNextStart: "they apply at its next start",
			cell.AppliedRestarted: "restarted with them",
			cell.AppliedNothing:   "limits apply at once, the others when it restarts",
		}[res.Applied]
		if res.Limits != nil {
			how += "; limits now " + res.Limits.String()
		}
		fmt.Fprintf(a.stderr, "%s: settings updated, %s (%s)\n", name, how, res.Took.Round(time.Millisecond))
		return nil
	}
	what := fmt.Sprintf("generation %d", res.Generation)
	switch {
	case res.New:
		what = "new " + what
	case res.Generation == res.Previous:
		what = "no change: " + what + " is current"
	default:
		what += fmt.Sprintf(" (was %d)", res.Previous)
	}
	how := map[cell.Applied]string{
		cell.AppliedNextStart: "boots at next start",
		cell.AppliedSwitched:  "switched in place",
		cell.AppliedRestarted: "restarted",
		cell.AppliedNothing:   "already running",
	}[res.Applied]
	if res.Limits != nil {
		how += "; limits now " + res.Limits.String()
	}
	fmt.Fprintf(a.stderr, "%s: %s, %s (%s)\n", name, what, how, res.Took.Round(time.Millisecond))
	return nil
}

func (a *app) switchGenerationCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "switch-generation NAME GENERATION",
		Short: "Make a generation current (switched in place when running)",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(1)(cmd, args); err != nil {
				return err
			}
			if len(args) < 2 {
				return usageError{errUsage("missing GENERATION")}
			}
			if _, err := strconv.Atoi(args[1]); err != nil {
				return usageError{fmt.Errorf("%q is not a generation number", args[1])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			n, _ := strconv.Atoi(args[1])
			m, err := a.manager()
			if err != nil {
				return err
			}
			res, err := m.SwitchGeneration(cmd.Context(), args[0], n)
			if err != nil {
				return err
			}
			return a.report(args[0], res, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (a *app) rollbackCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Switch to the generation before the current one",
		Args:  nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			res, err := m.Rollback(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.report(args[0], res, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (a *app) listGenerationsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list-generations NAME",
		Short: "List the container's generations",
		Long: `List-generations shows each generation of the container's Nix profile: its
number, when it was made, its system, and which is current (booted next) and
which is running. nix-env --list-generations -p
/nix/var/nix/profiles/per-container/NAME/system shows the same profile.`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			gens, err := m.ListGenerations(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, gens)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "GENERATION\tDATE\tCURRENT\tRUNNING\tSYSTEM")
			for _, g := range gens {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", g.Number, g.Date.Local().Format("2006-01-02 15:04:05"),
					mark(g.Current), mark(g.Running), g.System)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}

func (a *app) deleteGenerationsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "delete-generations NAME GENERATIONS...",
		Short: "Delete generations (numbers, old, +N, Nd), as nix-env does",
		Long: `Delete-generations deletes generations from the container's profile, selected
as nix-env --delete-generations selects them: numbers ("3 4"), "old" (all but
the current), "+N" (keep the current and the N-1 before it) or "Nd" (made more
than N days ago, except the one that was current then). The current and the
running generation are never deleted; naming either is an error. Run
nix-collect-garbage afterwards to free the store.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(len(args))(cmd, args); err != nil {
				return err
			}
			if len(args) < 2 {
				return usageError{errUsage("missing GENERATIONS (numbers, old, +N or Nd)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			deleted, err := m.DeleteGenerations(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			if asJSON {
				if deleted == nil {
					deleted = []int{}
				}
				return printJSON(a.stdout, map[string][]int{"deleted": deleted})
			}
			if !a.quiet {
				if len(deleted) == 0 {
					fmt.Fprintf(a.stderr, "%s: no generation to delete\n", args[0])
				} else {
					fmt.Fprintf(a.stderr, "%s: deleted generations %v\n", args[0], deleted)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
