package e2e

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
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

// TestLogin drives `nixcell login` through a real terminal: the window
// size arrives and follows resizes, Ctrl-C interrupts the command inside
// but not the session, and the shell's exit status comes back.
func TestLogin(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("login")
	in.create(name, `{ }`)
	in.must("start", name)

	cmd := in.cmd("login", name)
	cmd.Env = append(cmd.Env, "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out screen
	go func() { _, _ = io.Copy(&out, tty) }()
	expect := func(want string) {
		t.Helper()
		waitFor(t, 15*time.Second, "the terminal to show "+want+"; it shows:\n"+out.String(), func() bool {
			return strings.Contains(out.String(), want)
		})
	}
	send := func(s string) {
		if _, err := tty.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}

	send("echo size=$(stty size) tty=$(tty)\n")
	expect("size=40 100 tty=/dev/pts/")
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 30, Cols: 90}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the resize is relayed asynchronously
	send("echo resized=$(stty size)\n")
	expect("resized=30 90")
	send("sleep 100\n")
	time.Sleep(300 * time.Millisecond)
	send("\x03")
	send("echo after=$?\n")
	expect("after=130")
	send("echo user=$(id -u) host=$(hostname)\n")
	expect("user=0 host=" + name)
	send("exit 5\n")
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Errorf("login exit: %v, want status 5; screen:\n%s", err, out.String())
	}
}
