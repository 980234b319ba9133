package atomicfile

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestLeftoversOfKilledWriters kills a process that keeps replacing a
// file until a kill lands between a write's create and its rename: what
// it left is what Leftovers lists, RemoveLeftovers removes it, and the
// file itself holds one whole write.
func TestLeftoversOfKilledWriters(t *testing.T) {
	if path := os.Getenv("ATOMICFILE_TEST_WRITER"); path != "" {
		data := bytes.Repeat([]byte("x"), 4<<20)
		for {
			if err := WriteFile(path, data, 0o600); err != nil {
				os.Exit(1)
			}
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	var left []string
	whole := func() bool { _, err := os.Stat(path); return err == nil }
	for try := 0; try < 50 && (len(left) == 0 || !whole()); try++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeftoversOfKilledWriters$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_TEST_WRITER="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+try*7) * time.Millisecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		left = Leftovers(path)
	}
	if len(left) == 0 || !whole() {
		t.Skip("no kill of 50 landed inside a write after a whole one")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(left)+1 {
		t.Errorf("directory holds %d entries, Leftovers lists %v", len(entries), left)
	}
	if err := RemoveLeftovers(path); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, dir, "state.json")
	if data, err := os.ReadFile(path); err != nil || len(data) != 4<<20 {
		t.Errorf("state.json after the kills: %d bytes (%v), want one whole write", len(data), err)
	}
	// A name of another file with the same prefix is not a leftover.
	other := filepath.Join(dir, "state.json.bak")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Leftovers(path); len(got) != 0 {
		t.Errorf("Leftovers lists %v, not written by WriteFile of %s", got, path)
	}
}
