package nixfiles

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/testutil"
)

// root is the project's top directory; Nix expressions are evaluated there.
var root = testutil.ProjectRoot()

// moduleSystem is a module system the module is evaluated with: the
// stand-in's (lib "null") or nixpkgs' own (a lib/ directory).
type moduleSystem struct{ name, lib string }

// moduleSystems are the stand-in's, and nixpkgs' when
// NIXCELL_TEST_NIXPKGS_LIB names its lib/ directory.
func moduleSystems(t *testing.T) []moduleSystem {
	systems := []moduleSystem{{"stand-in", "null"}}
	if p := os.Getenv("NIXCELL_TEST_NIXPKGS_LIB"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(abs, "modules.nix")); err != nil {
			t.Fatalf("NIXCELL_TEST_NIXPKGS_LIB=%s is not a nixpkgs lib directory: %v", p, err)
		}
		systems = append(systems, moduleSystem{"nixpkgs-lib", abs})
	}
	return systems
}

// nix runs a Nix command in the project with the stand-in as <nixpkgs>,
// returning stdout and stderr.
func nix(t *testing.T, name string, args ...string) (string, string, error) {
	t.Helper()
	testutil.RequiresCommands(t, name)
	cmd := exec.Command(name, append([]string{"-I", "nixpkgs=" + testutil.FixtureNixpkgs()}, args...)...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// eval evaluates expr strictly into v (JSON), failing the test on an error.
func eval(t *testing.T, v any, expr string) {
	t.Helper()
	out, stderr, err := nix(t, "nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	if err != nil {
		t.Fatalf("evaluating %s: %v\n%s", expr, err, stderr)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
}

// evalError evaluates expr, which must fail, and returns Nix's message.
func evalError(t *testing.T, expr string) string {
	t.Helper()
	out, stderr, err := nix(t, "nix-instantiate", "--eval", "--strict", "--json", "-E", expr)
	if err == nil {
		t.Fatalf("evaluating %s: no error, got %s", expr, out)
	}
	return stderr
}

// runCmd runs a command in the project with env added, returning its
// combined output.
func runCmd(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// build builds expr with nix-build and returns the output path.
func build(t *testing.T, expr string) string {
	t.Helper()
	out, stderr, err := nix(t, "nix-build", "--no-out-link", "-E", expr)
	if err != nil {
		t.Fatalf("building %s: %v\n%s", expr, err, stderr)
	}
	return strings.TrimSpace(out)
}

// hostExpr is the sample host's evaluation (nix/tests/eval.nix) in a
// generation, with a module system.
func hostExpr(ms moduleSystem, generation int, attr string) string {
	return "(import ./nix/tests/eval.nix { configuration = import ./nix/tests/host.nix { generation = " +
		strconv.Itoa(generation) + "; }; nixpkgsLib = " + ms.lib + "; })" + attr
}
