package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func sample(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.AddFile("manifest.json", []byte(`{"name":"web"}`)); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 300<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.IntN(7)) // compressible, not trivially
	}
	h := &tar.Header{Name: "root/f", Typeflag: tar.TypeReg, Mode: 0o4755, Size: int64(len(data)),
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x03"}}
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readAll reads every member, as import's first pass does.
func readAll(data []byte) ([]string, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var names []string
	for {
		h, content, err := r.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return names, err
		}
		names = append(names, h.Name)
		if _, err := io.Copy(io.Discard, content); err != nil {
			return names, err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	names, err := readAll(sample(t))
	if err != nil || len(names) != 2 || names[0] != "manifest.json" || names[1] != "root/f" {
		t.Fatalf("read %v, %v", names, err)
	}
}

// TestDamage: every truncation is refused, and a flipped byte anywhere is
// refused unless the archive still holds what it held: deflate's encoding
// has bits that no output depends on (a few positions in a few archives
// out of hundreds, found when the manifest's time moved them under this
// test's flips), and such a flip changes no byte of any member.
func TestDamage(t *testing.T) {
	good := sample(t)
	plain := func(data []byte) []byte {
		z, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil
		}
		out, _ := io.ReadAll(z)
		return out
	}
	original := plain(good)
	for _, n := range []int{0, 1, 10, len(good) / 3, len(good) / 2, len(good) - 30, len(good) - 8, len(good) - 1} {
		if _, err := readAll(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d of %d bytes: %v, want ErrCorrupt", n, len(good), err)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		bad := bytes.Clone(good)
		at := 10 + r.IntN(len(bad)-10) // past the gzip header's unchecked fields
		bad[at] ^= byte(1 + r.IntN(255))
		_, err := readAll(bad)
		if err == nil && bytes.Equal(plain(bad), original) {
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("byte %d of %d flipped: %v, want ErrCorrupt", at, len(bad), err)
		}
	}
}

// TestDrain: a damaged archive whose damage a member's reader meets first
// (as garbage content) is told damaged by Drain; a whole one is not.
func TestDrain(t *testing.T) {
	data := sample(t)
	for _, tc := range []struct {
		what  string
		data  []byte
		whole bool
	}{
		{"whole", data, true},
		{"damaged", func() []byte { d := bytes.Clone(data); d[len(d)/2] ^= 0x55; return d }(), false},
		{"truncated", data[:len(data)-40], false},
	} {
		r, err := NewReader(bytes.NewReader(tc.data))
		if err != nil {
			t.Fatal(err)
		}
		// The first member, read whole, as a reader that gives up at
		// the second would have.
		if _, content, err := r.Next(); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		} else if _, err := io.Copy(io.Discard, content); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		err = r.Drain()
		if tc.whole && err != nil || !tc.whole && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Drain says %v", tc.what, err)
		}
	}
}
