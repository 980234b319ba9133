package network

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAppliedKeptInRun: the digest of the applied rules is kept in the run
// directory, not in the state file: a change of it alone writes no state
// file; Load reads it back; what is not a digest reads as none.
func TestAppliedKeptInRun(t *testing.T) {
	dir := t.TempDir()
	s := Store{Path: filepath.Join(dir, "network.json"), LockPath: filepath.Join(dir, "global.lock"), ID: "abc",
		AppliedPath: filepath.Join(dir, "run", "network.applied")}
	// A first update that holds an address makes the state file.
	if err := s.Update(context.Background(), func(st *State) error { st.Addresses["web"] = Addresses{}; return nil }); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(context.Background(), func(st *State) error { st.Applied = "0123abcd"; return nil }); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(s.Path); err != nil || !os.SameFile(before, after) {
		t.Errorf("the state file was written for a new digest alone")
	}
	if data, _ := os.ReadFile(s.Path); strings.Contains(string(data), "applied") {
		t.Errorf("the state file holds the digest: %s", data)
	}
	if st, err := s.Load(); err != nil || st.Applied != "0123abcd" {
		t.Errorf("Load: applied %q, %v; want the kept digest", st.Applied, err)
	}
	if err := s.Update(context.Background(), func(st *State) error { st.Applied = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.AppliedPath); !os.IsNotExist(err) {
		t.Errorf("an empty digest left the file: %v", err)
	}
	for _, bad := range []string{"not a digest\n", strings.Repeat("a", 200)} {
		if err := os.WriteFile(s.AppliedPath, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.Load(); st.Applied != "" {
			t.Errorf("Load of %q: applied %q, want none", bad, st.Applied)
		}
	}
}
