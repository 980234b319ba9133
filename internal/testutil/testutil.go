// Package testutil owns what nixcell's tests share: the gates that skip a
// test whose host lacks a prerequisite (and fail it instead under CI, where
// every prerequisite is present), isolated state directories and names, and
// the locations of the project's fixtures.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nixcell/nixcell/internal/doctor"
)

// InCI tells whether the tests run under CI (CI=true), where a missing
// prerequisite is a failure, not a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips the test with reason, or fails it under CI.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing under CI (CI=true): %s", reason)
	}
	t.Skip(reason)
}

// Requires skips (fails under CI) a test whose host fails one of nixcell
// doctor's checks, with doctor's own words.
func Requires(t testing.TB, checks ...doctor.Check) {
	t.Helper()
	for _, c := range checks {
		if r := c.Run(); r.Status == doctor.Fail {
			Skip(t, fmt.Sprintf("doctor's check %s: %s (fix: %s)", c.Name, r.Found, r.Fix))
		}
	}
}

// RequiresRoot skips (fails under CI) a test that needs root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	Requires(t, doctor.Root)
}

// RequiresCommands skips (fails under CI) a test whose host lacks one of
// the commands.
func RequiresCommands(t testing.TB, names ...string) {
	t.Helper()
	Requires(t, doctor.Commands("commands", "install them (scripts/setup-host.sh)", names...))
}

// ProjectRoot is the repository's top directory.
func ProjectRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// FixtureNixpkgs is the stand-in nixpkgs the tests build systems with.
func FixtureNixpkgs() string { return filepath.Join(ProjectRoot(), "fixtures", "nixpkgs") }

// NixArgs points Nix at the stand-in nixpkgs.
func NixArgs() string { return "-I nixpkgs=" + FixtureNixpkgs() }

// Name returns a container name unique to this run, starting with prefix,
// so tests never collide with each other or with real containers (Nix
// profiles are host-wide).
func Name(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + "-t" + hex.EncodeToString(b)
}

// StateDir creates a state directory for one test, reachable by container
// users (every directory above a container root must be searchable), and
// removes it when the test ends.
func StateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixcell-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Reencoded is v encoded as nixcell's state files are (indented JSON),
// decoded into a fresh value and encoded again: a value that survives
// being stored gives the same bytes both times, which the fuzz targets of
// the state readers check.
func Reencoded[T any](t testing.TB, v T) (first, second []byte) {
	t.Helper()
	first, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("encoding %+v: %v", v, err)
	}
	var back T
	if err := json.Unmarshal(first, &back); err != nil {
		t.Fatalf("decoding what was encoded, %s: %v", first, err)
	}
	second, err = json.MarshalIndent(back, "", "  ")
	if err != nil {
		t.Fatalf("encoding %+v: %v", back, err)
	}
	return first, second
}
