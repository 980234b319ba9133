package cell

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

// FuzzReadManifest: an archive's manifest, whoever made it, reads as an
// ErrBadArchive or as a manifest that keeps every rule readManifest
// checks, and that reads the same when exported again.
func FuzzReadManifest(f *testing.F) {
	good := `{"format": 1, "name": "web", "exportedAt": "2026-11-23T12:00:00Z", "uuid": "5d3c5f2e-0000-4000-8000-000000000000",
	  "createdAt": "2026-11-20T12:00:00+01:00", "source": {"configFile": "/etc/web.nix"},
	  "spec": {"network": {"enableNat": true}, "limits": {"memoryBytes": 536870912}}, "config": true,
	  "generation": 3, "system": "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web",
	  "closure": [{"path": "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-glibc", "narHash": "sha256-x", "narSize": 1, "references": []},
	    {"path": "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web", "narHash": "sha256-y", "narSize": 2,
	     "references": ["/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-glibc"]}],
	  "addresses": {"hostOnly4": "10.101.0.2"}, "idRangeSize": 65536}`
	for _, s := range []string{
		good,
		strings.Replace(good, `"name": "web"`, `"name": "../web"`, 1),
		strings.Replace(good, `"format": 1`, `"format": 2`, 1),
		strings.Replace(good, `"idRangeSize": 65536`, `"idRangeSize": 0`, 1),
		strings.Replace(good, `"spec": {`, `"spec": {"privileged": true, `, 1),
		strings.Replace(good, `"source": {`, `"source": {"rootfs": "/srv/root", `, 1),
		strings.Replace(good, `bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-glibc", "narHash"`, `..", "narHash"`, 1),
		strings.Replace(good, `"network": {"enableNat": true}`, `"network": {"hostAddress": "10.0.0.1"}`, 1),
		`{"format": 1, "name": "web", "system": "", "closure": [{"path": ""}], "idRangeSize": 65536}`,
		`{}`, `null`, ``, `{"format": 1`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		man, err := readManifest(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadArchive) {
				t.Fatalf("readManifest(%q) = %v, not an ErrBadArchive", data, err)
			}
			return
		}
		checkManifest(t, man)
		again, err := json.Marshal(man)
		if err != nil {
			t.Fatalf("encoding %+v: %v", man, err)
		}
		back, err := readManifest(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("the manifest %s, exported again as %s, does not read: %v", data, again, err)
		}
		if third, _ := json.Marshal(back); !bytes.Equal(third, again) {
			t.Fatalf("the manifest %s exports as\n%s\nthen as\n%s", data, again, third)
		}
	})
}

// checkManifest checks the rules readManifest promises.
func checkManifest(t *testing.T, man Manifest) {
	t.Helper()
	if man.Format != manifestFormat || spec.ValidateName(man.Name) != nil || man.Spec.Validate() != nil || man.Source.RootFS != "" {
		t.Fatalf("accepted the manifest %+v", man)
	}
	if man.Spec.Privileged != (man.IDRangeSize == 0) || man.IDRangeSize != 0 && man.IDRangeSize != idmap.RangeSize {
		t.Fatalf("accepted the ID range size %d with privileged = %t", man.IDRangeSize, man.Spec.Privileged)
	}
	inClosure := false
	for _, i := range man.Closure {
		base := strings.TrimPrefix(i.Path, nix.StoreDir+"/")
		if path.Dir(i.Path) != nix.StoreDir || base == "" || base == "." || base == ".." || strings.Contains(base, "/") {
			t.Fatalf("accepted the store path %q", i.Path)
		}
		inClosure = inClosure || i.Path == man.System
	}
	if !inClosure {
		t.Fatalf("accepted the system %q, which is not in the closure", man.System)
	}
}

// FuzzSnapshotInfo: a snapshot's snapshot.json reads as an error naming
// the snapshot, or as what it lists, which is written back as it was read.
// The file is written where the snapshot's reader reads it, in a directory
// the fuzz target's executions share (each worker runs them one at a
// time).
func FuzzSnapshotInfo(f *testing.F) {
	for _, s := range []string{
		`{"tag": "s1", "createdAt": "2026-11-23T12:00:00Z", "generation": 3, "system": "/nix/store/aaaa-nixos-system",
		  "files": 1200, "bytes": 123456789, "cloned": 100000000}`,
		`{"tag": "s1", "createdAt": "2026-11-23T12:00:00.5-07:00", "generation": -1, "files": -5, "bytes": -1}`,
		`{"tag": "other"}`, `{"createdAt": "never"}`, `{}`, `null`, ``, `{"tag": `,
	} {
		f.Add([]byte(s))
	}
	m := &Manager{Store: state.Store{Root: f.TempDir()}}
	file := filepath.Join(m.snapshotDir("web", "s1"), "snapshot.json")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		info, err := m.snapshotInfo("web", "s1")
		if err != nil {
			if !strings.Contains(err.Error(), "snapshot s1 of web") {
				t.Fatalf("the error does not name the snapshot: %v", err)
			}
			return
		}
		first, err := json.Marshal(info)
		if err != nil {
			t.Fatalf("encoding %+v: %v", info, err)
		}
		var back SnapshotInfo
		if err := json.Unmarshal(first, &back); err != nil {
			t.Fatalf("decoding what was encoded, %s: %v", first, err)
		}
		if second, _ := json.Marshal(back); !bytes.Equal(first, second) {
			t.Fatalf("the snapshot's record %s is written as\n%s\nthen as\n%s", data, first, second)
		}
	})
}
