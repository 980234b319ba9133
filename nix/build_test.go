package nixfiles

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestVendorHash fails when nix/package.nix's vendorHash is not the hash of
// what `go mod vendor` makes now (after a change of go.mod or go.sum).
func TestVendorHash(t *testing.T) {
	testutil.RequiresCommands(t, "go", "nix")
	if out, err := runCmd(nil, "bash", "scripts/update-vendor-hash.sh", "--check"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// goModCache is a module cache the build users of Nix can read, filled from
// this host's own (and, for a module it lacks, from GOPROXY, as any Go
// build here would): the vendor derivation's GOPROXY.
const goModCache = "/var/cache/nixcell-gomod"

func fillModuleCache(t *testing.T) string {
	t.Helper()
	hostCache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	proxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	if err := os.MkdirAll(goModCache, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(goModCache, 0o755); err != nil { // the build users go through it
		t.Fatal(err)
	}
	vendor := t.TempDir()
	env := []string{"GOMODCACHE=" + goModCache, "GOFLAGS=-mod=mod",
		"GOPROXY=file://" + strings.TrimSpace(string(hostCache)) + "/cache/download," + strings.TrimSpace(string(proxy))}
	if out, err := runCmd(env, "go", "mod", "vendor", "-o", vendor+"/vendor"); err != nil {
		t.Fatalf("filling %s: %v: %s", goModCache, err, out)
	}
	return "file://" + goModCache + "/cache/download"
}

// TestNixBuild builds default.nix with the stand-in nixpkgs, offline (in a
// network namespace of its own, Go's modules from a local cache), and
// checks the package: the binary, its man pages and shell completions.
// The flake's package is the same derivation.
func TestNixBuild(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "nix-build", "nix", "go", "unshare")
	proxy := fillModuleCache(t)
	start := time.Now()
	cmd := exec.Command("unshare", "--net", "nix-build", "-I", "nixpkgs="+testutil.FixtureNixpkgs(), "--no-out-link", "default.nix")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOPROXY="+proxy)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-build default.nix: %v\n%s", err, stderr.String())
	}
	pkg := strings.TrimSpace(string(out))
	t.Logf("built %s in %s", pkg, time.Since(start).Round(time.Second))

	if out, err := exec.Command(pkg+"/bin/nixcell", "list", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "nixcell list") {
		t.Errorf("%s/bin/nixcell list --help: %v: %s", pkg, err, out)
	}
	for _, f := range []string{
		"share/man/man1/nixcell.1", "share/man/man1/nixcell-create.1", "share/man/man1/nixcell-network-status.1",
		"share/bash-completion/completions/nixcell", "share/zsh/site-functions/_nixcell", "share/fish/vendor_completions.d/nixcell.fish",
	} {
		if fi, err := os.Stat(filepath.Join(pkg, f)); err != nil || fi.Size() == 0 {
			t.Errorf("the package lacks %s: %v", f, err)
		}
	}
	if entries, _ := os.ReadDir(pkg + "/bin"); len(entries) != 1 {
		t.Errorf("bin holds %d programs, want only nixcell (the docs generator is removed)", len(entries))
	}

	system := map[string]string{"amd64": "x86_64-linux", "arm64": "aarch64-linux"}[runtime.GOARCH]
	drv, stderrText, err := nix(t, "nix-instantiate", "default.nix")
	if err != nil {
		t.Fatalf("nix-instantiate default.nix: %v: %s", err, stderrText)
	}
	flakeDrv, stderrText, err := nixFlake(t, "eval", "--raw", "path:"+root+"#packages."+system+".default.drvPath")
	if err != nil {
		t.Fatalf("the flake's package: %v: %s", err, stderrText)
	}
	if strings.TrimSpace(drv) != flakeDrv {
		t.Errorf("the flake's package is %s, default.nix's %s", flakeDrv, drv)
	}
	for attr, want := range map[string]string{"nixosModules.default": "/nix/module.nix", "overlays.default": "true"} {
		apply := "toString"
		if attr == "overlays.default" {
			apply = "o: builtins.toJSON (builtins.isFunction o)"
		}
		got, stderrText, err := nixFlake(t, "eval", "--raw", "path:"+root+"#"+attr, "--apply", apply)
		if err != nil || !strings.HasSuffix(got, want) {
			t.Errorf("the flake's %s: %q, %v: %s", attr, got, err, stderrText)
		}
	}
}

// nixFlake runs nix SUBCOMMAND with flakes on, the stand-in as the flake's
// nixpkgs.
func nixFlake(t *testing.T, sub string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command("nix", append([]string{"--extra-experimental-features", "nix-command flakes", sub, "--no-write-lock-file",
		"--override-input", "nixpkgs", "path:" + testutil.FixtureNixpkgs()}, args...)...)
	cmd.Dir = root
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
