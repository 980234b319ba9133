package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
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

// TestSyncHosts publishes the running containers' names in a hosts file of
// the test's own, beside another instance's block, and takes them out
// again, leaving the file as it was.
func TestSyncHosts(t *testing.T) {
	s := testSettings(t)
	path := filepath.Join(t.TempDir(), "hosts")
	orig := "127.0.0.1 localhost\n# begin nixcell-def (managed by nixcell)\n10.70.0.2\tother\n# end nixcell-def\n::1 localhost\n"
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	d := desiredFor(t, s, "", map[string]spec.Network{
		"web": {},
		"pv":  {HostAddress: netip.MustParsePrefix("10.9.0.1/32"), LocalAddress: netip.MustParsePrefix("10.9.0.2/32")},
		"own": {Bridge: "br0", IP: netip.MustParsePrefix("192.168.1.50/24")},
		"hn":  {HostNetwork: true},
	})
	d.HostsFile = path
	if err := syncHosts(d); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := orig + "# begin nixcell-abc (managed by nixcell)\n192.168.1.50\town\n10.9.0.2\tpv\n10.50.0.2\tweb\nfd12:3456:789a:1::2\tweb\n# end nixcell-abc\n"
	if string(got) != want {
		t.Errorf("hosts file:\n%s\nwant:\n%s", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("the hosts file's mode: %v, %v; want 0640 kept", fi.Mode(), err)
	}
	// Unchanged: not rewritten.
	if err := syncHosts(d); err != nil {
		t.Fatal(err)
	}
	if again, err := os.Stat(path); err != nil || !os.SameFile(fi, again) {
		t.Errorf("an unchanged hosts file was replaced (%v)", err)
	}
	d.Containers = nil
	if err := syncHosts(d); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != orig {
		t.Errorf("without containers the hosts file is\n%s\nwant it as it was:\n%s", got, orig)
	}
	// No hosts file and nothing to publish: none is made.
	d.HostsFile = filepath.Join(t.TempDir(), "none")
	if err := syncHosts(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.HostsFile); !os.IsNotExist(err) {
		t.Errorf("a hosts file was made with nothing to publish: %v", err)
	}
}
