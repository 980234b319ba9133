package cli

import (
	"os"
	"os/signal"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/cell"
)

func stdio() cell.Stdio {
	return cell.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

// notifyStop delivers the signals with which a service manager or a user
// asks a foreground container to shut down.
func notifyStop() <-chan os.Signal {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, unix.SIGTERM)
	return ch
}

type execCmd struct {
	*app
	tty bool
	env []string
	cwd string
}

func (a *app) execCommand() *cobra.Command {
	c := &execCmd{app: a}
	cmd := &cobra.Command{
		Use:     "exec NAME [-t] [-e VAR=VALUE] -- COMMAND [ARG...]",
		Aliases: []string{"run-command"},
		Short:   "Run a command in the running container",
		Long: `Exec runs COMMAND as root in the running container, in all its namespaces,
with stdin, stdout and stderr passed through and its exit status returned. It
gets no terminal unless -t is given. The command cannot gain privileges
(no_new_privs).`,
		Example: `  nixcell exec web -- systemctl status
  nixcell exec -t web -- bash -l`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := nameArg(len(args))(cmd, args); err != nil {
				return err
			}
			if len(command(args)) == 0 {
				return usageError{errUsage("missing COMMAND after NAME --")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.exec(args[0], cell.ExecRequest{Args: command(args), Env: c.env, Cwd: c.cwd, TTY: c.tty})
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&c.tty, "tty", "t", false, "give the command a terminal")
	f.StringArrayVarP(&c.env, "env", "e", nil, "set an environment variable (repeatable)")
	f.StringVarP(&c.cwd, "workdir", "w", "", "working directory inside (default /)")
	return cmd
}

func (a *app) exec(name string, e cell.ExecRequest) error {
	m, err := a.manager()
	if err != nil {
		return &exitError{code: exitRuntime, err: err}
	}
	e.Stdio = stdio()
	code, err := m.Exec(name, e)
	if err != nil {
		return &exitError{code: exitRuntime, err: err}
	}
	return exitStatus(code)
}

func (a *app) loginCommand() *cobra.Command {
	var shell string
	cmd := &cobra.Command{
		Use:     "login NAME [--shell PATH]",
		Aliases: []string{"root-login"},
		Short:   "Open a root login shell in the running container",
		Long: `Login opens root's login shell on a new terminal in the container: the shell of
root's entry in the container's /etc/passwd (/bin/sh when it names none; sh
when the container has no passwd database), started as a login shell (-l) in
root's home. Where the container's init is systemd, it runs as machinectl
shell runs it: a service of the container's own systemd with a PAM session
(PAMName=login, through the container's systemd-run --pty), so PAM and
logind see it (loginctl lists the session). --shell PATH runs PATH -l
instead, without a session. Window size changes follow, Ctrl-C goes to the
container, and the shell's exit status is returned.`,
		Args: nameArg(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := a.manager()
			if err != nil {
				return &exitError{code: exitRuntime, err: err}
			}
			code, err := m.Login(args[0], cell.LoginRequest{Shell: shell, Stdio: stdio()})
			if err != nil {
				return &exitError{code: exitRuntime, err: err}
			}
			return exitStatus(code)
		},
	}
	cmd.Flags().StringVar(&shell, "shell", "", "run this shell (a path inside the container) instead of root's login shell")
	return cmd
}

// command is what follows NAME, without the "--" that separates it (flag
// parsing stops at NAME, so the separator is still there).
func command(args []string) []string {
	rest := args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	return rest
}
