package network

import (
	"strings"
	"testing"
)

func TestReplaceBlock(t *testing.T) {
	orig := "127.0.0.1 localhost\n::1 localhost\n"
	with := replaceBlock([]byte(orig), "nixcell", []string{"10.0.0.2\tweb"})
	want := orig + "# begin nixcell (managed by nixcell)\n10.0.0.2\tweb\n# end nixcell\n"
	if string(with) != want {
		t.Errorf("added:\n%s\nwant:\n%s", with, want)
	}
	other := replaceBlock(with, "nixcell-x", []string{"10.9.0.2\tdb"})
	replaced := replaceBlock(other, "nixcell", []string{"10.0.0.3\tapp"})
	if !strings.Contains(string(replaced), "10.0.0.3\tapp") || strings.Contains(string(replaced), "web") || !strings.Contains(string(replaced), "10.9.0.2\tdb") {
		t.Errorf("replaced:\n%s", replaced)
	}
	back := replaceBlock(replaceBlock(replaced, "nixcell", nil), "nixcell-x", nil)
	if string(back) != orig {
		t.Errorf("removing the blocks gave:\n%q\nwant\n%q", back, orig)
	}
	if got := replaceBlock([]byte("no newline"), "t", []string{"a b"}); !strings.HasPrefix(string(got), "no newline\n# begin t") {
		t.Errorf("no final newline: %q", got)
	}
}
