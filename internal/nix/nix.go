// Package nix owns every call to Nix: evaluating a container's configuration,
// building its NixOS system, and the per-container Nix profiles that hold its
// generations (the paths nixos-container uses, so nix-env and the garbage
// collector see them). It runs the real nix-build, nix-instantiate and
// nix-env; their progress and errors stream to the caller's writer as Nix
// prints them.
package nix

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nixcell/nixcell/internal/fault"
)

//go:embed container.nix
var containerExpr string

// ErrNix is the class of failures of a Nix command; Nix's own message has
// already been streamed to the caller's writer, or, when the caller shows
// none of Nix's output (quiet), is part of the error.
var ErrNix = fault.New(fault.Nix, "nix failed")

// Invocation is what every evaluation and build of one container shares.
type Invocation struct {
	Name string // container name, the module argument `name`
	IP   string // container IPv4 address, the module argument `ip` ("" if none)
	// Nameserver is the address of nixcell's name server for the container
	// ("" if none): the default of networking.nameservers.
	Nameserver string
	// ConfigFile is the absolute path of the configuration file.
	ConfigFile string
	// Flake, instead of ConfigFile, is "REF#NAME": the system is the flake's
	// nixosConfigurations.NAME.config.system.build.toplevel, as
	// nixos-container and nixos-rebuild build it.
	Flake string
	// Args are extra arguments for Nix, such as "-I nixpkgs=/src/nixpkgs".
	Args []string
	// Log receives Nix's progress and error output.
	Log io.Writer
}

func (inv Invocation) exprArgs(part string) []string {
	args := []string{"-E", containerExpr,
		"--argstr", "name", inv.Name,
		"--argstr", "ip", inv.IP,
		"--argstr", "nameserver", inv.Nameserver,
		"--argstr", "configFile", inv.ConfigFile,
		"--argstr", "part", part,
	}
	return append(args, inv.Args...)
}

// Settings evaluates the host-side attributes of the configuration (the
// attribute set form without `configuration`) and returns them as JSON; a
// bare NixOS module yields "{}".
func (inv Invocation) Settings(ctx context.Context) ([]byte, error) {
	if inv.Flake != "" {
		return []byte("{}"), nil // a flake provides only the system
	}
	args := append([]string{"--eval", "--strict", "--json"}, inv.exprArgs("settings")...)
	return run(ctx, inv.Log, "nix-instantiate", args...)
}

// HostSettings evaluates a configuration that holds host-side settings
// only, as a container without a NixOS system (a plain root file system)
// has, and returns them as JSON.
func (inv Invocation) HostSettings(ctx context.Context) ([]byte, error) {
	args := append([]string{"--eval", "--strict", "--json"}, inv.exprArgs("host-settings")...)
	return run(ctx, inv.Log, "nix-instantiate", args...)
}

// Build builds the container's system. outLink is a symlink nix-build
// creates to the result: it roots the build against the garbage collector
// until the profile holds it; the caller removes it afterwards.
func (inv Invocation) Build(ctx context.Context, outLink string) (string, error) {
	var path string
	if inv.Flake != "" {
		ref, name, _ := strings.Cut(inv.Flake, "#")
		args := append([]string{"build", "--extra-experimental-features", "nix-command flakes", "-o", outLink,
			ref + "#nixosConfigurations." + name + ".config.system.build.toplevel"}, inv.Args...)
		if _, err := run(ctx, inv.Log, "nix", args...); err != nil {
			return "", err
		}
		var err error
		if path, err = filepath.EvalSymlinks(outLink); err != nil {
			return "", fmt.Errorf("reading the build result: %w", err)
		}
	} else {
		args := append([]string{"-o", outLink}, inv.exprArgs("system")...)
		out, err := run(ctx, inv.Log, "nix-build", args...)
		if err != nil {
			return "", err
		}
		path = strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(path, '\n'); i >= 0 {
			path = path[i+1:]
		}
	}
	if err := CheckSystem(path); err != nil {
		return "", err
	}
	return path, nil
}

// CheckSystem tells whether path looks like a built NixOS system: a path in
// the Nix store with an executable init.
func CheckSystem(path string) error {
	if !strings.HasPrefix(path, StoreDir+"/") {
		return fmt.Errorf("%q is not a path in %s", path, StoreDir)
	}
	fi, err := os.Stat(filepath.Join(path, "init"))
	if err != nil {
		return fmt.Errorf("%s is not a NixOS system: %w", path, err)
	}
	if fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not a NixOS system: its init is not executable", path)
	}
	return nil
}

// StoreDir is the Nix store shared with every container.
const StoreDir = "/nix/store"

func run(ctx context.Context, log io.Writer, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s is not installed (install Nix, e.g. Debian's nix-bin): %w", name, err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	// A nixcell killed mid-build must not leave Nix running on: it would
	// later create links in a state directory that has been cleaned up.
	// SIGTERM, not SIGKILL: Nix, interrupted, kills its builders (they run
	// as build users, outside nixcell's reach); killed, it leaves them
	// running, holding the output's lock, so that the next create of the
	// same system waits for them (minutes for a fork-heavy build under
	// emulation). An interrupted Nix that does not end is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	quiet := log == nil || log == io.Discard
	var said tail
	cmd.Stderr = &said
	if !quiet {
		cmd.Stderr = io.MultiWriter(log, &said)
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s interrupted: %w", name, ctx.Err())
		}
		if quiet {
			if msg := said.lastError(); msg != "" {
				return nil, fmt.Errorf("%w: %s: %v; Nix said:\n%s", ErrNix, name, err, msg)
			}
			return nil, fmt.Errorf("%w: %s: %v (Nix printed nothing)", ErrNix, name, err)
		}
		return nil, fmt.Errorf("%w: %s: %v (Nix's output is above)", ErrNix, name, err)
	}
	return stdout.Bytes(), nil
}

// tail keeps the end of what Nix writes to stderr, for an error when its
// output is not shown as it comes.
type tail struct{ buf []byte }

// tailSize bounds what tail keeps: a build's log can be long; its error
// is at the end.
const tailSize = 64 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

// maxErrorLines bounds the lines of Nix's message an error repeats.
const maxErrorLines = 30

// lastError is Nix's last error message: from its last line that starts
// with "error:" to the end (a trace may follow), or the last lines when
// there is none; at most maxErrorLines lines either way.
func (t *tail) lastError() string {
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	from := max(0, len(lines)-10)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimLeft(lines[i], " "), "error:") {
			from = i
			break
		}
	}
	lines = lines[from:]
	if len(lines) > maxErrorLines {
		lines = append(lines[:maxErrorLines], "…")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// FlakeRef completes a --flake argument: "REF#NAME" as given, or "REF"
// alone meaning the container's own name. Relative path references become
// absolute, since the flake is evaluated again by later updates.
func FlakeRef(arg, container string) (string, error) {
	ref, name, found := strings.Cut(arg, "#")
	if !found || name == "" {
		name = container
	}
	if ref == "" {
		return "", fmt.Errorf("flake reference %q has no flake before '#'", arg)
	}
	if strings.Contains(name, ".") || strings.Contains(name, "\"") {
		return "", fmt.Errorf("flake reference %q: %q is not a configuration name (nixosConfigurations.NAME is built)", arg, name)
	}
	if p, ok := strings.CutPrefix(ref, "path:"); ok && !filepath.IsAbs(p) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		ref = "path:" + abs
	} else if strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/") {
		abs, err := filepath.Abs(ref)
		if err != nil {
			return "", err
		}
		ref = abs
	}
	return ref + "#" + name, nil
}

// Closure returns the store paths that path needs at run time, itself
// included (nix-store --query --requisites).
func Closure(ctx context.Context, path string) ([]string, error) {
	out, err := run(ctx, nil, "nix-store", "--query", "--requisites", path)
	if err != nil {
		return nil, err
	}
	paths := strings.Fields(string(out))
	if len(paths) == 0 {
		return nil, fmt.Errorf("nix-store found no closure for %s", path)
	}
	return paths, nil
}
