package nix

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestQuietErrorKeepsNixsMessage: a quiet caller (nothing shows Nix's
// output) still gets Nix's error in the error (issue 13, item 5); a
// caller that shows the output gets a pointer to it.
func TestQuietErrorKeepsNixsMessage(t *testing.T) {
	testutil.RequiresCommands(t, "nix-instantiate")
	inv := Invocation{Name: "web", ConfigFile: "/nonexistent-config.nix", Args: []string{"-I", "nixpkgs=" + testutil.FixtureNixpkgs()}}
	for _, log := range []io.Writer{nil, io.Discard} {
		inv.Log = log
		_, err := inv.Settings(context.Background())
		if !errors.Is(err, ErrNix) || !strings.Contains(err.Error(), "Nix said:\nerror:") || !strings.Contains(err.Error(), "nonexistent-config.nix") {
			t.Errorf("quiet (%v): %v", log, err)
		}
	}
	var shown strings.Builder
	inv.Log = &shown
	_, err := inv.Settings(context.Background())
	if !errors.Is(err, ErrNix) || !strings.Contains(err.Error(), "(Nix's output is above)") || !strings.Contains(shown.String(), "error:") {
		t.Errorf("shown: %v; output %q", err, shown.String())
	}
}

func TestTailLastError(t *testing.T) {
	var tl tail
	tl.Write([]byte("building...\nwarning: x\nerror: first\nmore\nerror:\n       … while evaluating\n       broken on purpose\n"))
	if got, want := tl.lastError(), "error:\n       … while evaluating\n       broken on purpose"; got != want {
		t.Errorf("lastError = %q, want %q", got, want)
	}
	tl = tail{}
	tl.Write([]byte(strings.Repeat("line\n", 100)))
	if got := tl.lastError(); strings.Count(got, "\n") != 9 {
		t.Errorf("without an error line: %q", got)
	}
	tl = tail{}
	for range 3000 {
		tl.Write([]byte("0123456789abcdefghij0123456789abcdefghij\n"))
	}
	if len(tl.buf) > tailSize {
		t.Errorf("tail kept %d bytes", len(tl.buf))
	}
}

// Nix's "No space left on device" becomes ENOSPC on the file it names, or
// on the store when it names none.
func TestNoSpace(t *testing.T) {
	for said, want := range map[string]string{
		"building '/nix/store/x.drv'...\nerror: creating symlink from '/var/lib/nixcell/containers/c/build-result.tmp-1' to '/nix/store/y': No space left on device\n": "/var/lib/nixcell/containers/c/build-result.tmp-1",
		"error: writing to file: No space left on device\n": StoreDir,
		"error: undefined variable 'x'\n":                   "",
	} {
		tl := &tail{buf: []byte(said)}
		err := tl.noSpace()
		var pe *fs.PathError
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v, want nothing", said, err)
		case want != "" && (!errors.As(err, &pe) || pe.Path != want || !errors.Is(err, syscall.ENOSPC)):
			t.Errorf("%q: %v, want ENOSPC on %s", said, err, want)
		}
	}
}
