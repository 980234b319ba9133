package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// assertOnly fails unless dir holds exactly the named entries, so a leftover
// temporary file shows up.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if fmt.Sprint(got) != fmt.Sprint(names) {
		t.Fatalf("directory %s holds %q, want %q", dir, got, names)
	}
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")

	if err := WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "two" {
		t.Fatalf("content = %q, want %q", got, "two")
	}
	assertOnly(t, dir, "state")
}

func TestWriteFileExactPerm(t *testing.T) {
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o640, 0o666} {
		path := filepath.Join(dir, perm.String())
		if err := WriteFile(path, nil, perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), perm)
		}
	}
}

func TestWriteFileLeavesNoTempOnError(t *testing.T) {
	dir := t.TempDir()
	// The rename onto a non-empty directory fails after the temporary file
	// was created and written, the latest point an error can leave it.
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(target, []byte("data"), 0o600)
	if err == nil {
		t.Fatal("WriteFile over a directory succeeded")
	}
	if !strings.Contains(err.Error(), target) {
		t.Errorf("error %q does not name %s", err, target)
	}
	assertOnly(t, dir, "target")
}

func TestWriteFileMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "state")
	err := WriteFile(path, []byte("x"), 0o600)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

// TestWriteFileReadersNeverSeeTornContent has writers replace a file while a
// reader reads it: every read must be one complete version.
func TestWriteFileReadersNeverSeeTornContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	version := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 64<<10) }
	if err := WriteFile(path, version(0), 0o600); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for range 20 {
				if err := WriteFile(path, version(w), 0o600); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 64<<10 || !bytes.Equal(got, bytes.Repeat(got[:1], len(got))) {
			t.Fatalf("read a torn file of %d bytes", len(got))
		}
	}
	assertOnly(t, dir, "state")
}

func TestJSONRoundTrip(t *testing.T) {
	type doc struct {
		Name  string         `json:"name"`
		Count map[string]int `json:"count"`
	}
	path := filepath.Join(t.TempDir(), "doc.json")
	in := doc{Name: "web", Count: map[string]int{"a": 1}}
	if err := WriteJSON(path, in, 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"name\": \"web\",\n  \"count\": {\n    \"a\": 1\n  }\n}\n"
	if string(raw) != want {
		t.Fatalf("file = %q, want %q", raw, want)
	}
	var out doc
	if err := ReadJSON(path, &out); err != nil {
		t.Fatal(err)
	}
	if out.Name != in.Name || out.Count["a"] != 1 {
		t.Fatalf("read back %+v, want %+v", out, in)
	}
}

func TestReadJSONMissing(t *testing.T) {
	var v map[string]int
	err := ReadJSON(filepath.Join(t.TempDir(), "none.json"), &v)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestReadJSONMalformed(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"truncated": `{"a": 1`,
		"trailing":  "{\"a\": 1}\n{}\n",
		"wrongtype": `{"a": "one"}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var v map[string]int
		err := ReadJSON(path, &v)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
}

func TestWriteJSONUnencodable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "doc.json")
	if err := WriteJSON(path, make(chan int), 0o600); err == nil {
		t.Fatal("encoding a channel succeeded")
	}
	assertOnly(t, dir)
}
