package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/nixcell/nixcell/internal/console"
)

// A container's console is a terminal, as systemd-nspawn gives one: the
// init's /dev/console and standard streams are the slave side of a
// pseudo-terminal that libcontainer makes in the container's devpts, and
// nixcell gets the master side. A detached container's master goes to the
// instance's console agent (package console), which copies it to the
// console log, capped, for as long as the container runs; under Run it is
// copied to Run's standard output. So systemd uses it as any console:
// boot messages, and a getty on it (console-getty.service).
//
// When the caller takes the init's output (Stdout, Stderr: a Nomad task's
// log files), the init's standard streams are those, and /dev/console is
// the console log file, as no process is left to serve a terminal; a
// systemd init is then told not to start a getty there
// (systemd.getty_auto=0).

// DefaultConsoleLogSize is what a console log keeps when its container
// does not say: the latest output, in ConsoleLog and ConsoleLog.1.
const DefaultConsoleLogSize = 4 << 20

// fileConsole tells whether /dev/console is the console log file rather
// than a terminal (see above).
func (c *Container) fileConsole() bool { return c.Stdout != nil || c.Stderr != nil }

// consoleLog is the container's console log, opened for this start.
type consoleLog struct {
	dir, log *os.File // the directory (O_PATH) and the log in it
}

func (l consoleLog) Close() {
	l.dir.Close()
	l.log.Close()
}

// initExitFile is where the console agent writes the wait status of the
// init pid, beside the console log: named by the init, since the agent
// may write it after the next start has begun.
func initExitFile(pid int) string { return initExitPrefix + strconv.Itoa(pid) }

const initExitPrefix = "init-exit."

// openConsoleLog starts the console log afresh: the last start's log, its
// previous part and the init's exit status go. The directory is the
// host's; the log is opened in it without following links. It belongs to
// the host's root, unless it is a file console, the container's
// /dev/console too: then to the container's root.
func (c *Container) openConsoleLog() (consoleLog, error) {
	var l consoleLog
	dir, name := filepath.Split(c.ConsoleLog)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return l, err
	}
	var err error
	if l.dir, err = os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return l, fmt.Errorf("opening console log: %w", err)
	}
	stale := []string{name + ".1", lastExitFile}
	if exits, err := filepath.Glob(filepath.Join(dir, initExitPrefix+"*")); err == nil {
		for _, e := range exits {
			stale = append(stale, filepath.Base(e))
		}
	}
	for _, f := range stale {
		if err := unix.Unlinkat(int(l.dir.Fd()), f, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			l.dir.Close()
			return l, fmt.Errorf("removing %s: %w", filepath.Join(dir, f), err)
		}
	}
	fd, err := unix.Openat(int(l.dir.Fd()), name, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		l.dir.Close()
		return l, fmt.Errorf("opening console log: %w", err)
	}
	l.log = os.NewFile(uintptr(fd), c.ConsoleLog)
	owner := 0 // the host's, which the agent writes
	if c.fileConsole() {
		owner = int(c.IDs.Start)
	}
	if err := l.log.Chown(owner, owner); err != nil {
		l.Close()
		return l, fmt.Errorf("chown console log: %w", err)
	}
	return l, nil
}

// keepConsole hands a detached container's console to the instance's
// agent. Preconditions: the init exists.
func (c *Container) keepConsole(s *started) error {
	pid, err := s.proc.Pid()
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	init := os.NewFile(uintptr(pidfd), "init")
	defer init.Close()
	size := c.ConsoleLogSize
	if size == 0 {
		size = DefaultConsoleLogSize
	}
	return c.ConsoleAgent.Keep(console.Console{Master: s.console, Init: init, Dir: s.log.dir, Log: s.log.log,
		LogName: filepath.Base(c.ConsoleLog), ExitName: initExitFile(pid), MaxBytes: size})
}

// followConsole copies the console's output to w until the init has ended and
// its output is read; wait for it with the returned function once the
// init has ended. The console's other side is held open meanwhile: a
// terminal whose last other side closes reads EIO until it is opened
// again, as systemd does with /dev/console.
func followConsole(master *os.File, w io.Writer) (ended func()) {
	peer, err := unix.IoctlRetInt(int(master.Fd()), unix.TIOCGPTPEER)
	if err != nil {
		peer = -1
	} else {
		unix.CloseOnExec(peer)
	}
	if f, ok := w.(*os.File); w == nil || ok && f == nil {
		w = io.Discard
	} else if !ok || !term.IsTerminal(int(f.Fd())) {
		w = &crlf{w: w} // "\r\n" is a terminal's line end, not a log's
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(w, master) // ends with EIO once no other side is open
	}()
	return func() {
		if peer >= 0 {
			unix.Close(peer)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second): // a process that escaped keeps it open
		}
	}
}

// crlf writes what a terminal's output holds with "\r\n" (and "\r\r\n", a
// program's "\r\n" through the terminal's output processing) as "\n", as
// the console agent writes a console log. Other '\r's are kept.
type crlf struct {
	w  io.Writer
	cr int // the '\r's held back at the end of the last write
}

func (c *crlf) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p)+c.cr)
	for _, b := range p {
		if b == '\r' {
			c.cr++
			continue
		}
		if b != '\n' {
			out = append(out, bytes.Repeat([]byte{'\r'}, c.cr)...)
		}
		c.cr = 0
		out = append(out, b)
	}
	if _, err := c.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// terminalSize is the size of w when it is a terminal, for the console of
// a container run in the foreground (0, 0 otherwise).
func terminalSize(w io.Writer) (cols, rows uint16) {
	if f, ok := w.(*os.File); ok && f != nil {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			return ws.Col, ws.Row
		}
	}
	return 0, 0
}

// EscapeKey is ^]: pressed three times within a second on the terminal of
// a container run in the foreground, it stops the container, as under
// systemd-nspawn.
const EscapeKey = 0x1d

// interaction is a terminal connected to a foreground container's
// console: pressed delivers a signal when the escape key was pressed three
// times, and stop gives the terminal back.
type interaction struct {
	pressed chan os.Signal
	stop    func()
}

// interact connects in, when it is a terminal, to the console: raw, its
// keys to the container, its size followed. Otherwise the console only
// shows the container's output.
func interact(master *os.File, in io.Reader) interaction {
	it := interaction{pressed: make(chan os.Signal, 1), stop: func() {}}
	f, ok := in.(*os.File)
	if !ok || f == nil || !term.IsTerminal(int(f.Fd())) {
		return it
	}
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return it
	}
	resize := func() {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
		}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	go func() {
		for range winch {
			resize()
		}
	}()
	go func() {
		buf := make([]byte, 512)
		var presses []time.Time
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for _, b := range buf[:n] {
				if b != EscapeKey {
					presses = presses[:0]
					continue
				}
				presses = append(presses, time.Now())
				if len(presses) == 3 && presses[2].Sub(presses[0]) <= time.Second {
					select {
					case it.pressed <- unix.SIGTERM:
					default:
					}
					presses = presses[:0]
				} else if len(presses) == 3 {
					presses = presses[1:]
				}
			}
			if _, err := master.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	it.stop = func() {
		signal.Stop(winch)
		close(winch)
		_ = term.Restore(int(f.Fd()), old)
	}
	return it
}

// merge delivers what either channel does.
func merge(a, b <-chan os.Signal) <-chan os.Signal {
	out := make(chan os.Signal, 2)
	for _, ch := range []<-chan os.Signal{a, b} {
		go func() {
			for s := range ch {
				out <- s
			}
		}()
	}
	return out
}
