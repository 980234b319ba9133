package cli

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/spec"
)

func (a *app) statsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a running container's memory, CPU and process use and limits",
		Long: `Stats reads the container's resource use from the kernel (its cgroup): memory
in use (page cache and tmpfs files included, as the kernel charges them), its
limit and peak, and how many processes the OOM killer ended; CPU time used,
the CPU limit and how long the limit held the container back; and the number
of processes and threads and their limit. With --json the numbers are exact:
bytes and nanoseconds, 0 for no limit.`,
		Example: `  nixcell stats web
  nixcell stats web --json`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return err
			}
			s, err := m.Stats(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, s)
			}
			limit := func(v string, set bool) string {
				if !set {
					return "no limit"
				}
				return "limit " + v
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "memory\t%s\t%s, peak %s, %d OOM kills\n", spec.FormatSize(s.Memory.UsageBytes),
				limit(spec.FormatSize(s.Memory.LimitBytes), s.Memory.LimitBytes > 0),
				spec.FormatSize(s.Memory.MaxUsageBytes), s.Memory.OOMKills)
			fmt.Fprintf(w, "cpu\t%s\t%s, throttled %s\n", time.Duration(s.CPU.UsageNanos).Round(time.Millisecond),
				limit(strconv.FormatFloat(s.CPU.Limit, 'f', -1, 64)+" CPUs", s.CPU.Limit > 0),
				time.Duration(s.CPU.ThrottledNanos).Round(time.Millisecond))
			fmt.Fprintf(w, "pids\t%d\t%s\n", s.Pids.Current, limit(strconv.FormatUint(s.Pids.Limit, 10), s.Pids.Limit > 0))
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
