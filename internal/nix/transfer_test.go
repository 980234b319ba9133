package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

func TestBase32(t *testing.T) {
	// sha256("hello\n") and what nix-hash --type sha256 --to-base32 makes
	// of it.
	raw, err := parseHash("sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
	if err != nil {
		t.Fatal(err)
	}
	const want = "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq"
	if got := base32(raw[:]); got != want {
		t.Errorf("base32 = %s, want %s", got, want)
	}
	back, err := parseHash("sha256:" + want)
	if err != nil || back != raw {
		t.Errorf("parsing base-32 back: %x, %v", back, err)
	}
}

// testPath builds a store path of its own, so that a test may sign it.
func testPath(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommands(t, "nix-build", "nix-store", "nix")
	expr := fmt.Sprintf(`derivation { name = "nixcell-transfer-test"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo %d > $out" ]; }`, time.Now().UnixNano())
	link := filepath.Join(t.TempDir(), "result")
	out, err := exec.Command("nix-build", "-o", link, "-E", expr).Output()
	if err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestExportTrust: an export read here hashes each NAR as Nix does; a
// signature Nix made verifies against its key; an unsigned or altered
// path is refused when signatures are required.
func TestExportTrust(t *testing.T) {
	p := testPath(t)
	ctx := context.Background()
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "sk"), filepath.Join(dir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "nixcell-test-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	key, _ := os.ReadFile(pk)
	policy := TrustPolicy{RequireSigs: true, Keys: []string{strings.TrimSpace(string(key))}}

	var buf bytes.Buffer
	if err := Export(ctx, []string{p}, &buf); err != nil {
		t.Fatal(err)
	}
	exported, err := ReadExport(bytes.NewReader(buf.Bytes()))
	if err != nil || len(exported) != 1 || exported[0].Path != p {
		t.Fatalf("ReadExport: %+v, %v", exported, err)
	}
	infos, err := PathInfos(ctx, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.CheckTrust(infos[0], exported[0]); !errors.Is(err, ErrUntrusted) {
		t.Errorf("an unsigned path: %v, want ErrUntrusted", err)
	}
	if err := (TrustPolicy{}).CheckTrust(infos[0], exported[0]); err != nil {
		t.Errorf("without require-sigs: %v", err)
	}
	if out, err := exec.Command("nix", "--extra-experimental-features", "nix-command", "store", "sign", "--key-file", sk, p).CombinedOutput(); err != nil {
		t.Fatalf("nix store sign: %v: %s", err, out)
	}
	if infos, err = PathInfos(ctx, []string{p}); err != nil || len(infos[0].Signatures) == 0 {
		t.Fatalf("path-info after signing: %+v, %v", infos, err)
	}
	if err := policy.CheckTrust(infos[0], exported[0]); err != nil {
		t.Errorf("a path signed by a trusted key: %v", err)
	}
	other := TrustPolicy{RequireSigs: true, Keys: []string{"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="}}
	if err := other.CheckTrust(infos[0], exported[0]); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a path signed by an untrusted key: %v", err)
	}
	// An altered NAR: its hash no longer matches what was signed.
	altered := bytes.Replace(buf.Bytes(), []byte("\n"), []byte("X"), 1)
	if x, err := ReadExport(bytes.NewReader(altered)); err != nil {
		t.Errorf("reading an altered export: %v", err)
	} else if err := policy.CheckTrust(infos[0], x[0]); err == nil || !strings.Contains(err.Error(), "not the one described") {
		t.Errorf("an altered NAR: %v", err)
	}
	// A truncated export cannot be read.
	if _, err := ReadExport(bytes.NewReader(buf.Bytes()[:buf.Len()/2])); !errors.Is(err, ErrBadExport) {
		t.Errorf("a truncated export: %v", err)
	}
}
