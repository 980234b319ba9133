package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Exec describes a process to run in a running container.
type Exec struct {
	Args []string
	Env  []string // added to the default environment
	Cwd  string   // default "/root" for a terminal, "/" otherwise
	// TTY gives the process a new pseudo-terminal in the container, which
	// Stdio.Stdin and Stdout are connected to (put in raw mode when they are
	// terminals, resized with them).
	TTY   bool
	Stdio Stdio
	// Done, when it is closed, kills the process: the caller's timeout or
	// cancellation.
	Done <-chan struct{}
	// Resize gives the size of the terminal (with TTY) when the caller's
	// stdin is not a terminal of its own, such as Nomad's alloc exec: the
	// first value sets it, later ones resize it.
	Resize <-chan WinSize
}

// WinSize is a terminal's size in characters.
type WinSize struct{ Rows, Cols uint16 }

// Run runs e in the container and returns its exit status (128+N when
// killed by signal N).
// A process without a terminal takes the fast path (execfast_linux.go); one
// with a terminal takes libcontainer's, which creates it inside.
func (e Exec) Run(stateRoot, name string) (int, error) {
	if path := os.Getenv(ExecPathEnv); !e.TTY && path != "libcontainer" {
		code, err := e.runFast(stateRoot, name)
		if errors.Is(err, errUnsupported) && path == "fast" {
			return 0, fmt.Errorf("the exec fast path does not implement this container's settings (%s=fast)", ExecPathEnv)
		}
		if !errors.Is(err, errUnsupported) {
			return code, err
		}
	}
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return 0, lifecycle.ErrNotRunning
	}
	if err != nil {
		return 0, fmt.Errorf("loading runtime state: %w", err)
	}
	if st, err := lc.Status(); err != nil || st != libcontainer.Running {
		return 0, lifecycle.ErrNotRunning
	}
	noNewPrivs := true
	p := &libcontainer.Process{
		Args:            e.Args,
		Env:             e.env(),
		Cwd:             e.cwd(),
		NoNewPrivileges: &noNewPrivs,
	}
	if !e.TTY {
		p.Stdin, p.Stdout, p.Stderr = e.Stdio.Stdin, e.Stdio.Stdout, e.Stdio.Stderr
		if err := lc.Run(p); err != nil {
			return 0, fmt.Errorf("starting %q: %w", e.Args[0], err)
		}
		defer killOnDone(p, e.Done)()
		stop := forwardSignals(p, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
		defer stop()
		ps, _ := p.Wait()
		return exitCode(ps), nil
	}
	return e.runTTY(lc, p)
}

// runTTY receives the master side of the container's new terminal over a
// socket pair (libcontainer creates the terminal inside, so it belongs to
// the container's devpts) and connects it to the caller's terminal.
func (e Exec) runTTY(lc *libcontainer.Container, p *libcontainer.Process) (int, error) {
	parent, child, err := utils.NewSockPair("console")
	if err != nil {
		return 0, err
	}
	defer parent.Close()
	p.ConsoleSocket = child
	in, out := e.Stdio.Stdin, e.Stdio.Stdout
	inTerm, isTerm := in.(*os.File)
	isTerm = isTerm && term.IsTerminal(int(inTerm.Fd()))
	if isTerm {
		if ws, err := unix.IoctlGetWinsize(int(inTerm.Fd()), unix.TIOCGWINSZ); err == nil {
			p.ConsoleWidth, p.ConsoleHeight = ws.Col, ws.Row
		}
	}
	err = lc.Run(p)
	child.Close()
	if err != nil {
		return 0, fmt.Errorf("starting %q: %w", e.Args[0], err)
	}
	master, err := utils.RecvFile(parent)
	if err != nil {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		return 0, fmt.Errorf("receiving the terminal: %w", err)
	}
	defer master.Close()
	defer killOnDone(p, e.Done)()
	if e.Resize != nil {
		defer follow(master, e.Resize)()
	}

	if isTerm {
		old, err := term.MakeRaw(int(inTerm.Fd()))
		if err == nil {
			defer term.Restore(int(inTerm.Fd()), old)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if ws, err := unix.IoctlGetWinsize(int(inTerm.Fd()), unix.TIOCGWINSZ); err == nil {
					_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
				}
			}
		}()
	}
	stop := forwardSignals(p, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	defer stop()
	if in != nil {
		go func() { _, _ = io.Copy(master, in) }()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if out != nil {
			_, _ = io.Copy(out, master) // ends with EIO once the last writer closes
		} else {
			_, _ = io.Copy(io.Discard, master)
		}
	}()
	ps, _ := p.Wait()
	// Output still buffered in the terminal drains quickly; a process left
	// behind that keeps the terminal open must not keep us here.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(500 * time.Millisecond):
	}
	return exitCode(ps), nil
}

// signaler is a process started either way: *libcontainer.Process or
// *os.Process.
type signaler interface{ Signal(os.Signal) error }

// forwardSignals relays signals sent to nixcell to the process. SIGINT is
// not among them: a terminal sends it to the whole foreground process group,
// which the process is part of.
func forwardSignals(p signaler, sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	signal.Ignore(unix.SIGINT)
	go func() {
		for s := range ch {
			_ = p.Signal(s)
		}
	}()
	return func() { signal.Stop(ch); close(ch) }
}

// killOnDone kills p when done is closed, until the returned function is
// called.
func killOnDone(p signaler, done <-chan struct{}) (stop func()) {
	if done == nil {
		return func() {}
	}
	finished := make(chan struct{})
	go func() {
		select {
		case <-done:
			_ = p.Signal(unix.SIGKILL)
		case <-finished:
		}
	}()
	return func() { close(finished) }
}

// follow applies the sizes from sizes to the terminal master until the
// returned function is called.
func follow(master *os.File, sizes <-chan WinSize) (stop func()) {
	finished := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case ws, ok := <-sizes:
				if !ok {
					return
				}
				_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
			case <-finished:
				return
			}
		}
	}()
	// The master must stay open until the goroutine no longer uses it.
	return func() { close(finished); wg.Wait() }
}
