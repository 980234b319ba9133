package driver

import (
	"bytes"
	"context"
	"io"
	"os"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// ExecTask runs cmd in the task's container (Nomad's script checks) and
// returns its output; it is killed after timeout.
func (d *Driver) ExecTask(taskID string, cmd []string, timeout time.Duration) (*drivers.ExecTaskResult, error) {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	var stdout, stderr bytes.Buffer
	done := make(chan struct{})
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { close(done) })
		defer t.Stop()
	}
	code, err := cells{dir: h.state.StateDir}.exec(h.state.Container,
		execRequest{Args: cmd, Stdout: &stdout, Stderr: &stderr, Done: done})
	if err != nil {
		return nil, err
	}
	return &drivers.ExecTaskResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitResult: &drivers.ExitResult{ExitCode: code}}, nil
}

// ExecTaskStreaming runs a command in the task's container for nomad alloc
// exec, with a terminal when asked for; it is killed when ctx ends.
func (d *Driver) ExecTaskStreaming(ctx context.Context, taskID string, opts *drivers.ExecOptions) (*drivers.ExitResult, error) {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	req := execRequest{Args: opts.Command, TTY: opts.Tty, Stdout: opts.Stdout, Stderr: opts.Stderr, Done: ctx.Done()}
	if opts.Tty {
		req.Env = []string{"TERM=xterm-256color"}
		req.Stdin = opts.Stdin
		sizes := make(chan termSize)
		go func() {
			defer close(sizes)
			for {
				select {
				case s := <-opts.ResizeCh:
					select {
					case sizes <- termSize{Rows: uint16(s.Height), Cols: uint16(s.Width)}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		req.Resize = sizes
	} else if opts.Stdin != nil {
		// Through a pipe of our own: a process that has exited must not
		// wait for stdin to end, which the runtime does for other readers.
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		go func() {
			_, _ = io.Copy(w, opts.Stdin)
			w.Close()
		}()
		defer opts.Stdin.Close()
		defer r.Close()
		req.Stdin = r
	}
	code, err := cells{dir: h.state.StateDir}.exec(h.state.Container, req)
	if err != nil {
		return nil, err
	}
	return &drivers.ExitResult{ExitCode: code}, nil
}
