package internal_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs checks that every package says what it owns.
func TestPackageDocs(t *testing.T) {
	dirs, _ := filepath.Glob("*")
	dirs = append(dirs, "../cmd/nixcell", "../e2e")
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range pkgs {
			if strings.HasSuffix(name, "_test") {
				continue
			}
			documented := false
			for _, f := range p.Files {
				if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package "+name+" ") || f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Command ") {
					documented = true
				}
			}
			if !documented {
				t.Errorf("package %s (%s) has no doc comment saying what it owns", name, dir)
			}
		}
	}
}

// TestDependencyDirection keeps the architecture: only the runtime links
// libcontainer, the CLI works through package cell, and the pure packages
// stay free of the runtime.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "seccomp", "-json=ImportPath,Imports,Deps", "github.com/nixcell/nixcell/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/nixcell/nixcell/"
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, mod)
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/opencontainers/runc") && pkg != "internal/runtime" {
				t.Errorf("%s imports %s: only internal/runtime may use libcontainer", pkg, imp)
			}
			if pkg == "internal/cli" && (imp == mod+"internal/nix" || imp == mod+"internal/idmap" || imp == mod+"internal/lockfile" ||
				imp == mod+"internal/network" || imp == mod+"internal/runtime" || imp == mod+"internal/hostfs" ||
				strings.HasPrefix(imp, "github.com/vishvananda/")) {
				t.Errorf("internal/cli imports %s: the CLI goes through internal/cell, which speaks its own types", imp)
			}
		}
		pure := map[string]bool{"internal/spec": true, "internal/lifecycle": true, "internal/idmap": true,
			"internal/atomicfile": true, "internal/lockfile": true, "internal/nix": true, "internal/state": true,
			"internal/network": true, "internal/fault": true, "internal/undo": true, "internal/failpoint": true,
			"internal/hostfs": true}
		if pure[pkg] {
			for _, d := range p.Deps {
				if d == mod+"internal/runtime" || d == mod+"internal/cell" || strings.HasPrefix(d, "github.com/opencontainers/") {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
}
