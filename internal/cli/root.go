// Package cli owns nixcell's command line: one file per command, each of
// which parses its flags, calls package cell and prints the result. Results
// go to stdout, progress and warnings to stderr; --json output only ever
// gains fields.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

// Exit statuses of nixcell's own outcomes. exec, login and run return the
// container process's status instead, and exitRuntime when nixcell itself
// failed.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitStopped = 3 // state: the container exists and is not running
	exitCreate  = 4 // state: the container's creation or destroy did not finish
	exitRuntime = 125
)

// exitStatuses maps every error class to the exit status it ends nixcell
// with: the one place that decides it (a test checks that every class has
// a line). An error of no class (a failed system call, say) is exitFailed.
// exec, login and run end with exitRuntime for their own failures, except
// a bad command line.
var exitStatuses = map[fault.Class]int{
	fault.Usage:       exitUsage,
	fault.Invalid:     exitFailed,
	fault.NotFound:    exitFailed,
	fault.Exists:      exitFailed,
	fault.State:       exitFailed,
	fault.Conflict:    exitFailed,
	fault.Exhausted:   exitFailed,
	fault.Unsupported: exitFailed,
	fault.Nix:         exitFailed,
	fault.Switch:      exitFailed,
	fault.NotReady:    exitFailed,
}

// exitStatusOf is the exit status err ends nixcell with.
func exitStatusOf(err error) int {
	if c, ok := fault.Of(err); ok {
		return exitStatuses[c]
	}
	return exitFailed
}

const exitCodesHelp = `Exit status:
  0    success; for exists: the container exists; for state: it is running
  1    failure (the message says what failed and what to do); for exists: no such container
  2    bad command line or request (a bad name, options that do not go together)
  3    state: the container is stopped
  4    state: the container's creation or destroy did not finish (destroy it)
  125  exec, login, run: nixcell could not run the process (else the process's own status)`

// app holds what every command shares.
type app struct {
	stateDir string
	quiet    bool
	stdout   io.Writer
	stderr   io.Writer
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error // nil: nothing to print
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// Main runs the command line and returns the exit status.
func Main(args []string) int {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := a.command()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitStatusOf(err)
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err == nil {
			return ee.code
		}
		err = ee.err
		if code != exitUsage {
			code = ee.code
		}
	}
	if code == exitUsage {
		fmt.Fprintf(a.stderr, "nixcell: %s%v\nRun '%s --help' for usage.\n", subject(cmd), err, cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(a.stderr, "nixcell: %s%v\n", subject(cmd), hint(err, a.stateDir))
	return code
}

// usageError marks a wrong command line: an error of class fault.Usage.
type usageError struct{ error }

func (usageError) Is(target error) bool { return target == fault.Usage }
func (e usageError) Unwrap() error      { return e.error }

// subject is the "create web: " part of an error message.
func subject(cmd *cobra.Command) string {
	if cmd == nil || !cmd.HasParent() {
		return ""
	}
	s := cmd.Name()
	for _, a := range cmd.Flags().Args() {
		if spec.ValidateName(a) == nil {
			return s + " " + a + ": "
		}
		break
	}
	return s + ": "
}

func (a *app) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "nixcell",
		Short: "Run NixOS system containers, unprivileged, with the host's Nix store",
		Long: `nixcell runs NixOS system containers. Each container has its own NixOS
system, built by Nix into a profile of generations, its own user ID range (its
root is not the host's root), the host's /nix/store shared read-only, a
seccomp filter and systemd-nspawn's capability set, memory, CPU and process
limits (nixcell stats shows the use), networks of its own (host-only and NAT
bridges with stable IPv4 and IPv6 addresses, isolation, port forwards, names),
and no host process once started.

State lives in /var/lib/nixcell (--state-dir, NIXCELL_STATE_DIR).

` + exitCodesHelp,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Name() == cobra.ShellCompRequestCmd || cmd.Name() == cobra.ShellCompNoDescRequestCmd {
				// Shell completion asks as the user at the prompt,
				// often not root (sudo nixcell <TAB>).
				return nil
			}
			if os.Geteuid() != 0 {
				return errors.New("nixcell must run as root: it manages namespaces, cgroups and Nix profiles")
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	defaultDir := os.Getenv("NIXCELL_STATE_DIR")
	if defaultDir == "" {
		defaultDir = state.DefaultRoot
	}
	root.PersistentFlags().StringVar(&a.stateDir, "state-dir", defaultDir, "state directory (env NIXCELL_STATE_DIR)")
	root.PersistentFlags().BoolVarP(&a.quiet, "quiet", "q", false, "print no progress, only results and errors")
	root.AddCommand(
		a.createCommand(), a.startCommand(), a.runCommand(), a.stopCommand(), a.terminateCommand(),
		a.restartCommand(), a.destroyCommand(), a.loginCommand(), a.execCommand(), a.listCommand(),
		a.stateCommand(), a.existsCommand(), a.updateCommand(), a.listGenerationsCommand(),
		a.switchGenerationCommand(), a.rollbackCommand(), a.deleteGenerationsCommand(), a.showIPCommand(), a.networkCommand(),
		a.statsCommand(), a.autostartCommand(), a.doctorCommand(), a.adoptCommand(), a.installUnitsCommand(), a.reloadCommand(),
		a.cloneCommand(), a.snapshotCommand(), a.listSnapshotsCommand(), a.restoreCommand(), a.deleteSnapshotCommand(),
		a.exportCommand(), a.importCommand(), a.checkpointCommand(), a.restoreCheckpointCommand(),
	)
	return root
}

// Command is nixcell's command tree, for generating its shell completions
// and man pages (cmd/nixcell-docs).
func Command() *cobra.Command {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	return a.command()
}

// manager opens the state directory.
func (a *app) manager() (*cell.Manager, error) {
	net, err := networkEnv()
	if err != nil {
		return nil, err
	}
	m, err := cell.Open(cell.Config{StateDir: a.stateDir, Network: net})
	if err != nil {
		return nil, err
	}
	if !a.quiet {
		m.Log = a.stderr
		m.NixLog = a.stderr
	}
	return m, nil
}

// args checks the number of positional arguments and that the first is a
// valid container name.
func nameArg(extra int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageError{errors.New("missing container name")}
		}
		if len(args) > 1+extra {
			return usageError{fmt.Errorf("unexpected argument %q", args[1+extra])}
		}
		return spec.ValidateName(args[0])
	}
}

// hint adds what the user can do about common errors that do not say it.
// stateDir is the instance's state directory.
func hint(err error, stateDir string) error {
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("%w (nixcell list shows the containers)", err)
	}
	if fault.NoSpace(err) {
		path := stateDir
		var pe *fs.PathError
		if errors.As(err, &pe) && filepath.IsAbs(pe.Path) {
			path = pe.Path
		}
		if errors.Is(err, unix.EDQUOT) {
			return fmt.Errorf("%w; free space within the quota of %s (or raise the container's limits.disk) and run the command again", err, path)
		}
		return fmt.Errorf("%w; free space on the file system at %s and run the command again", err, mountPoint(path))
	}
	return err
}

// mountPoint is the mount point of the file system that holds path (or
// would hold it: the nearest existing directory above it is looked at).
func mountPoint(path string) string {
	dev := func(p string) (uint64, bool) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return 0, false
		}
		return st.Dev, true
	}
	p := filepath.Clean(path)
	d, ok := dev(p)
	for !ok && p != "/" {
		p = filepath.Dir(p)
		d, ok = dev(p)
	}
	for p != "/" {
		if up, ok := dev(filepath.Dir(p)); !ok || up != d {
			break
		}
		p = filepath.Dir(p)
	}
	return p
}

// splitArgs splits NIX ARGS as a shell would split words: whitespace
// separates, single and double quotes group, a backslash escapes.
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		in    bool
		quote rune
	)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == '\'':
			cur.WriteRune(r)
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case quote == 0 && (r == '\'' || r == '"'):
			quote, in = r, true
		case quote == 0 && (r == ' ' || r == '\t' || r == '\n'):
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if in {
		args = append(args, cur.String())
	}
	return args, nil
}
