package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

const criuHelp = `CRIU must be able to run on this kernel: nixcell runs criu check first and,
if CRIU cannot work here, fails with CRIU's own reason, leaving the container
as it was. Debian 12's criu 3.17 cannot run on kernels from 6.13 on (its vDSO
check fails: "Unexpected rt vDSO area bounds"); CRIU 4.1 and later can. Only
containers with a network of their own are checkpointed (not hostNetwork, nor
one that joined another's namespace).`

func (a *app) checkpointCommand() *cobra.Command {
	var tcp, asJSON bool
	cmd := &cobra.Command{
		Use:   "checkpoint NAME [--tcp-established]",
		Short: "Save the running container's processes with CRIU and stop it",
		Long: `Checkpoint saves the running container's processes (their memory, open files,
listening sockets and, with --tcp-established, established TCP connections)
with CRIU, in the container's state directory, and stops the container. restore-checkpoint
brings them back. A start boots the container afresh and keeps the
checkpoint; a later checkpoint replaces it.

` + criuHelp,
		Args: nameArg(0),
	}
	cmd.Flags().BoolVar(&tcp, "tcp-established", false, "save established TCP connections too (CRIU's --tcp-established)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checkpoint as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		info, err := m.Checkpoint(cmd.Context(), args[0], tcp)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(a.stdout, info)
		}
		if !a.quiet {
			fmt.Fprintf(a.stderr, "%s: checkpointed generation %d with %s and stopped it\n", args[0], info.Generation, info.CRIU)
		}
		return nil
	}
	return cmd
}

func (a *app) restoreCheckpointCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "restore-checkpoint NAME",
		Short: "Bring back the processes a checkpoint saved",
		Long: `Restore-checkpoint brings back the processes of the stopped container's
checkpoint with CRIU, with its network, and removes the checkpoint. The
generation they ran must be current. If the restore fails, the container
stays stopped and the checkpoint stays.

` + criuHelp,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			info, err := m.RestoreCheckpoint(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stderr, "%s: restored the processes checkpointed at %s\n", args[0], info.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return nil
		},
	}
}
