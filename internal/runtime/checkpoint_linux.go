package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/lifecycle"
)

// CRIUError is a checkpoint or restore that CRIU refused or failed, with
// CRIU's own reason: the error lines of its log.
type CRIUError struct {
	Op string // "checkpoint", "restore" or "check"
	// Reason is CRIU's error lines.
	Reason string
	// Log is CRIU's whole log, kept for a closer look ("" when none).
	Log string
}

// Is makes a CRIU failure fault.Unsupported: what the host's CRIU and
// kernel cannot do.
func (e *CRIUError) Is(target error) bool { return target == fault.Unsupported }

func (e *CRIUError) Error() string {
	s := "CRIU cannot " + e.Op + " here: " + e.Reason
	if e.Log != "" {
		s += " (CRIU's log: " + e.Log + ")"
	}
	return s
}

// CheckCRIU runs `criu check`, CRIU's test of the kernel features it needs,
// and returns CRIU's version line; a CRIU that cannot work on this kernel
// is a *CRIUError with its reason.
func CheckCRIU() (string, error) {
	path, err := exec.LookPath("criu")
	if err != nil {
		return "", &CRIUError{Op: "check", Reason: "criu is not installed (Debian's package criu)"}
	}
	version, _ := exec.Command(path, "--version").Output()
	out, err := exec.Command(path, "check").CombinedOutput()
	if err != nil {
		return "", &CRIUError{Op: "check", Reason: strings.TrimSpace(firstLine(version)) + ": " + errorLines(out)}
	}
	return strings.TrimSpace(firstLine(version)), nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}

// errorLines picks CRIU's "Error" lines out of its output, without the
// source positions, joined; everything when there are none.
func errorLines(out []byte) string {
	var lines []string
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		l := s.Text()
		i := strings.Index(l, "Error (")
		if i < 0 {
			continue
		}
		l = l[i:]
		if j := strings.Index(l, "): "); j >= 0 {
			l = l[j+3:]
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	if len(lines) == 0 {
		return strings.TrimSpace(string(out))
	}
	return strings.Join(lines, "; ")
}

// CheckpointOptions say what a checkpoint saves.
type CheckpointOptions struct {
	// Dir receives CRIU's images; it must not exist.
	Dir string
	// TCP saves established TCP connections (CRIU's --tcp-established);
	// without it a checkpoint of a container with one fails.
	TCP bool
}

// Checkpoint saves the running container's processes in opts.Dir with
// CRIU and stops the container. On failure the container keeps running
// and the error is CRIU's (a *CRIUError).
func Checkpoint(stateRoot, name string, opts CheckpointOptions) error {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return lifecycle.ErrNotRunning
	}
	if err != nil {
		return fmt.Errorf("loading runtime state: %w", err)
	}
	work := opts.Dir + ".work"
	err = lc.Checkpoint(&libcontainer.CriuOpts{
		ImagesDirectory: opts.Dir, WorkDirectory: work,
		TcpEstablished: opts.TCP, FileLocks: true, LinkRemap: true,
	})
	if err != nil {
		return criuFailure("checkpoint", work, "dump.log", err)
	}
	return Cleanup(stateRoot, name)
}

// criuFailure is the error of a failed CRIU call, with the error lines of
// its log, which is kept beside the images.
func criuFailure(op, dir, log string, err error) error {
	path := filepath.Join(dir, log)
	data, rerr := os.ReadFile(path)
	if rerr != nil {
		return &CRIUError{Op: op, Reason: err.Error()}
	}
	return &CRIUError{Op: op, Reason: errorLines(data), Log: path}
}
