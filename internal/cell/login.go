package cell

import (
	"errors"
	"strings"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/runtime"
)

// LoginRequest is a root login on a new terminal in a running container.
type LoginRequest struct {
	// Shell, when set, is run (as Shell -l) instead of root's login shell
	// from the container's passwd database, and without a session.
	Shell string
	Stdio Stdio
	// Done and Resize are as for ExecRequest.
	Done   <-chan struct{}
	Resize <-chan WinSize
}

// Login opens root's login shell in the running container on a new
// terminal and returns its exit status: the shell of root's entry in the
// container's /etc/passwd (read inside the container, see runtime.Guest),
// in root's home. Where the container's init is systemd, the shell runs as
// machinectl shell runs it: a transient service of the container's own
// systemd with a PAM session (PAMName=login, through systemd-run --pty
// inside), so PAM and logind see it (loginctl lists it). Shell overrides
// both.
func (m *Manager) Login(name string, r LoginRequest) (int, error) {
	if err := m.createdAllows(name, lifecycle.Login); err != nil {
		return 0, err
	}
	args, home, err := m.loginCommand(name, r.Shell)
	if errors.Is(err, lifecycle.ErrNotRunning) {
		return 0, lifecycle.Check(lifecycle.Stopped, lifecycle.Login)
	}
	if err != nil {
		return 0, err
	}
	return m.Exec(name, ExecRequest{Args: args, Cwd: home, TTY: true, Stdio: r.Stdio, Done: r.Done, Resize: r.Resize})
}

// loginCommand is what Login runs, and where.
func (m *Manager) loginCommand(name, shell string) (args []string, home string, err error) {
	if shell != "" {
		return []string{shell, "-l"}, "/root", nil
	}
	g, err := runtime.OpenGuest(m.Store.RuntimeRoot(), name)
	if err != nil {
		return nil, "", err
	}
	defer g.Close()
	shell, home = "sh", "/root" // without a passwd entry, as before there was one
	if data, err := g.ReadFile("/etc/passwd", 1<<20); err == nil {
		if s, h, ok := rootEntry(string(data)); ok {
			shell, home = s, h
		}
	}
	if init, _ := g.InitName(); init == "systemd" {
		if run := g.LookPath("systemd-run"); run != "" {
			return []string{run, "--quiet", "--pty", "--collect", "--service-type=exec", "--uid=root",
				"--property=PAMName=login", "--working-directory=" + home, shell, "-l"}, home, nil
		}
	}
	return []string{shell, "-l"}, home, nil
}

// rootEntry finds root's login shell and home in a passwd(5) database;
// an empty shell is /bin/sh, as login(1) takes it.
func rootEntry(passwd string) (shell, home string, ok bool) {
	for _, line := range strings.Split(passwd, "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] != "root" {
			continue
		}
		shell, home = f[6], f[5]
		if shell == "" {
			shell = "/bin/sh"
		}
		if home == "" {
			home = "/"
		}
		return shell, home, true
	}
	return "", "", false
}
