package runtime

import (
	"bytes"
	"io"
	"os"

	"github.com/nixcell/nixcell/internal/trace"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// attachment runs a start's BeforeInit beside the init's own setup.
// libcontainer calls its CreateRuntime hooks once the init's namespaces
// exist and its mounts are made, and the init goes on (pivot_root, masked
// paths, seccomp, capabilities) as soon as the hooks return. The hook only
// starts BeforeInit; create waits for its result before the init may run,
// so the host configures the container's network while the init finishes
// its own setup instead of after it.
type attachment struct {
	run     func(pid int) error
	trace   *trace.Trace
	started bool // the hook ran (set and read on the goroutine of lc.Start)
	done    chan error
}

func newAttachment(run func(pid int) error, tr *trace.Trace) *attachment {
	return &attachment{run: run, trace: tr, done: make(chan error, 1)}
}

func (a *attachment) hooks() configs.Hooks {
	return configs.Hooks{configs.CreateRuntime: {configs.NewFunctionHook(func(s *specs.State) error {
		a.started = true
		pid := s.Pid
		go func() {
			end := a.trace.Beside("network interfaces")
			err := a.run(pid)
			end()
			a.done <- err
		}()
		return nil
	})}}
}

// wait returns BeforeInit's result for the init pid, running it now when
// the hook never did.
func (a *attachment) wait(pid int) error {
	if !a.started {
		return a.run(pid)
	}
	a.started = false
	return <-a.done
}

// drain waits for a BeforeInit the hook started to end, when the start
// failed after it: the caller's undo must find what it made.
func (a *attachment) drain() {
	if a.started {
		a.started = false
		<-a.done
	}
}

// libcontainer warns, each time it writes a container's state, that it
// cannot write a function hook there ("cannot serialize hook of type
// configs.FuncHook, skipping"): a start's attachment is one, and it needs
// no place in the state, since it is over when the start returns. Its other
// messages go to standard error as before.
func init() {
	logrus.SetOutput(dropLines{w: os.Stderr, containing: []byte("cannot serialize hook of type configs.FuncHook")})
}

// dropLines writes what it is given but for the lines (logrus writes one
// entry per call) that contain a text.
type dropLines struct {
	w          io.Writer
	containing []byte
}

func (d dropLines) Write(p []byte) (int, error) {
	if bytes.Contains(p, d.containing) {
		return len(p), nil
	}
	return d.w.Write(p)
}
