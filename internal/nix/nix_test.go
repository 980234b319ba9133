package nix

import (
	"context"
	"errors"
	"io"
	"strings"
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
