package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The gates and helpers below are those of nixcell's internal/testutil,
// which this module cannot import (see go.mod).

// inCI tells whether the tests run under CI (CI=true), where a missing
// prerequisite is a failure, not a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// skip skips the test with reason, or fails it under CI.
func skip(t testing.TB, reason string) {
	t.Helper()
	if inCI() {
		t.Fatalf("prerequisite missing under CI (CI=true): %s", reason)
	}
	t.Skip(reason)
}

// requireHost skips (fails under CI) a test whose host cannot run nixcell
// containers.
func requireHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "needs root (namespaces, cgroups, mounts)")
	}
	for _, c := range []string{"nix-build", "nix-env", "nix-instantiate", "nft", "ip"} {
		if _, err := exec.LookPath(c); err != nil {
			skip(t, c+" is not installed")
		}
	}
}

// projectRoot is the repository's top directory.
func projectRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func fixtureNixpkgs() string { return filepath.Join(projectRoot(), "fixtures", "nixpkgs") }

// stateDir creates a nixcell state directory for one test, reachable by
// container users, and removes it when the test ends.
func stateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixcell-nomad-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// instanceID is the identifier nixcell derives from a state directory for
// the host-wide names of its instance (bridges, nftables tables).
func instanceID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:4])
}

// subnetEnv gives a test nixcell subnets of its own, which no route of the
// host overlaps.
func subnetEnv(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	var routes []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "local" || dst == "broadcast" {
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil {
			routes = append(routes, p)
		}
	}
	for range 100 {
		k := 100 + mathrand.IntN(150)
		a := netip.MustParsePrefix(fmt.Sprintf("10.242.%d.0/24", k))
		b := netip.MustParsePrefix(fmt.Sprintf("10.243.%d.0/24", k))
		free := true
		for _, r := range routes {
			if r.Overlaps(a) || r.Overlaps(b) {
				free = false
			}
		}
		if free {
			return []string{"NIXCELL_HOSTONLY_SUBNET=" + a.String(), "NIXCELL_NAT_SUBNET=" + b.String()}
		}
	}
	t.Fatal("no free test subnet")
	return nil
}

// randomID is a random UUID-like allocation ID.
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
