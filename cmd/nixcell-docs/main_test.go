package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestWrite generates everything and checks that bash reads the completion
// and groff renders every page without a warning, with the help text's own
// layout and real minus signs.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"share/bash-completion/completions/nixcell", "share/zsh/site-functions/_nixcell", "share/fish/vendor_completions.d/nixcell.fish"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		// The scripts ask the binary itself (cobra's __complete).
		if !strings.Contains(string(data), "__complete") {
			t.Errorf("%s does not call nixcell __complete", f)
		}
	}
	if out, err := exec.Command("bash", "-n", filepath.Join(dir, "share/bash-completion/completions/nixcell")).CombinedOutput(); err != nil {
		t.Errorf("bash -n of the completion: %v: %s", err, out)
	}

	pages, _ := filepath.Glob(filepath.Join(dir, "share/man/man1/*.1"))
	want := map[string]bool{"nixcell.1": true, "nixcell-create.1": true, "nixcell-update.1": true, "nixcell-network-status.1": true}
	for _, p := range pages {
		delete(want, filepath.Base(p))
	}
	if len(want) > 0 || len(pages) < 20 {
		t.Fatalf("%d pages, missing %v", len(pages), want)
	}
	testutil.RequiresCommands(t, "groff")
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", filepath.Join(dir, "share/man/man1/nixcell-create.1"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff: %v: %s", err, stderr.String())
	}
	text := string(out)
	for _, s := range []string{"nixcell-create - Build a new container", "--system PATH", "  CONFIG.nix     a NixOS module", "<nixpkgs/nixos>", "nixcell create web ./web.nix"} {
		if !strings.Contains(stripOverstrike(text), s) {
			t.Errorf("the create page lacks %q:\n%s", s, text)
		}
	}
}

// stripOverstrike removes groff's bold and underline (X\bX, _\bX).
func stripOverstrike(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		if i+2 < len(r) && r[i+1] == '\b' {
			continue
		}
		if r[i] == '\b' {
			continue
		}
		b.WriteRune(r[i])
	}
	return b.String()
}
