package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/doctor"
)

func (a *app) doctorCommand() *cobra.Command {
	var asJSON, fix bool
	cmd := &cobra.Command{
		Use:   "doctor [--fix] [--json]",
		Short: "Check that this host can run containers, and what is left over",
		Long: `Doctor checks the host — the kernel and its features (user namespaces,
idmapped mounts of /nix/store, openat2, seccomp, overlayfs), the cgroup
layout, systemd and machined, nftables, subordinate ID ranges, Nix — and the
instance: its bridges and tables as its running containers need them, and
what is left of containers that no longer run or exist (run records, runtime
state, host directories, mounts, cgroups, interfaces, lock files, addresses,
ID ranges of removed instances). Each failure says how to fix it; --fix
removes the leftovers and checks again. It exits 1 when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			if fix {
				fixed, err := m.Fix(cmd.Context())
				for _, f := range fixed {
					fmt.Fprintf(a.stderr, "fixed: %s\n", f)
				}
				if err != nil {
					return err
				}
			}
			results := m.Doctor()
			if asJSON {
				if err := printJSON(a.stdout, results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					fmt.Fprintf(a.stdout, "%-4s  %-18s %s\n", r.Status, r.Check, r.Found)
					if r.Status != doctor.OK && r.Fix != "" {
						fmt.Fprintf(a.stdout, "      %-18s fix: %s\n", "", r.Fix)
					}
				}
			}
			if doctor.Failed(results) {
				return &exitError{code: exitFailed, err: errors.New("some checks failed (see above)")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().BoolVar(&fix, "fix", false, "remove the leftovers first")
	return cmd
}
