package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/nixcell/nixcell/internal/testutil"
)

// screen collects what a terminal shows.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// terminal is a nixcell command run on a real terminal of 40x100.
type terminal struct {
	t   *testing.T
	cmd *exec.Cmd
	tty *os.File
	out screen
}

func startTerminal(t *testing.T, in *instance, args ...string) *terminal {
	t.Helper()
	term := &terminal{t: t, cmd: in.cmd(args...)}
	term.cmd.Env = append(term.cmd.Env, "TERM=xterm")
	var err error
	if term.tty, err = pty.StartWithSize(term.cmd, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.tty.Close() })
	go func() { _, _ = io.Copy(&term.out, term.tty) }()
	return term
}

// expect waits until the terminal shows want.
func (term *terminal) expect(want string) {
	term.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(term.out.String(), want) {
		if time.Now().After(deadline) {
			term.t.Fatalf("the terminal does not show %q; it shows:\n%s", want, term.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (term *terminal) send(s string) {
	term.t.Helper()
	if _, err := term.tty.Write([]byte(s)); err != nil {
		term.t.Fatal(err)
	}
}

// exit waits for the command and returns its exit status.
func (term *terminal) exit() int {
	err := term.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		term.t.Fatal(err)
	}
	return 0
}

// checkTerminal drives a login shell on term, in a container whose host
// name is hostname: the window size arrives and follows resizes, Ctrl-C
// interrupts the command inside but not the session, and the shell's exit
// status comes back.
func checkTerminal(t *testing.T, term *terminal, hostname string) {
	term.send("echo size=$(stty size) tty=$(tty)\n")
	term.expect("size=40 100 tty=/dev/pts/")
	if err := pty.Setsize(term.tty, &pty.Winsize{Rows: 30, Cols: 90}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the resize is relayed asynchronously
	term.send("echo resized=$(stty size)\n")
	term.expect("resized=30 90")
	term.send("sleep 100\n")
	time.Sleep(300 * time.Millisecond)
	term.send("\x03")
	term.send("echo after=$?\n")
	term.expect("after=130")
	term.send("echo user=$(id -u) host=$(hostname)\n")
	term.expect("user=0 host=" + hostname)
	term.send("exit 5\n")
	if code := term.exit(); code != 5 {
		t.Errorf("login exit status %d, want 5; screen:\n%s", code, term.out.String())
	}
}

// TestLogin drives `nixcell login` through a real terminal (see
// checkTerminal), and runs root's login shell from the container's passwd
// database, read inside the container.
func TestLogin(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("login")
	in.create(name, `{ }`)
	in.must("start", name)
	// Its activation makes /etc/passwd at its first boot.
	waitFor(t, 10*time.Second, "the container's activation", func() bool {
		return in.run("exec", name, "--", "test", "-e", "/run/current-system").code == 0
	})

	term := startTerminal(t, in, "login", name)
	// The stand-in NixOS's passwd names its system's sh, as NixOS's does.
	term.send("echo shell=$0 home=$(pwd)\n")
	term.expect("shell=/run/current-system/sw/bin/sh home=/root")
	checkTerminal(t, term, name)

	t.Run("passwd-read-inside", func(t *testing.T) {
		// A passwd that is a link to an absolute path: the container's
		// own file at that path counts, never the host's.
		dir := t.TempDir()
		hostile := filepath.Join(dir, "passwd")
		if err := os.WriteFile(hostile, []byte("root:x:0:0::/:/host/only/shell\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		in.exec(name, "sh", "-c", "mkdir -p "+dir+" && echo root:x:0:0::/tmp:/run/current-system/sw/bin/ash > "+hostile+" && ln -sf "+hostile+" /etc/passwd")
		r := in.runIn("echo shell=$0 home=$(pwd)\nexit 3\n", "login", name)
		if r.code != 3 || !strings.Contains(r.stdout, "shell=/run/current-system/sw/bin/ash home=/tmp") {
			t.Errorf("login with /etc/passwd linked to %s: %s", hostile, r)
		}
	})
	t.Run("shell-flag", func(t *testing.T) {
		r := in.runIn("echo shell=$0\nexit 4\n", "login", "--shell", "/bin/sh", name)
		if r.code != 4 || !strings.Contains(r.stdout, "shell=/bin/sh") {
			t.Errorf("login --shell /bin/sh: %s", r)
		}
	})
}
