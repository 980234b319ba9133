package nixfiles

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestSubstituters runs scripts/nix-substituters.sh (setup-host.sh's part
// that decides on Nix's binary caches) on a nix.conf of its own, against a
// binary cache on loopback that answers, one that is not there and one that
// never answers.
func TestSubstituters(t *testing.T) {
	testutil.RequiresCommands(t, "curl", "awk")
	cache := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nix-cache-info" {
			_, _ = w.Write([]byte("StoreDir: /nix/store\n"))
			return
		}
		http.NotFound(w, r)
	}))
	defer cache.Close()
	gone := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	conf := filepath.Join(t.TempDir(), "nix.conf")
	const base = "sandbox = false\nbuild-cores = 2\n"
	if err := os.WriteFile(conf, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func() string { b, _ := os.ReadFile(conf); return string(b) }
	run := func(url string, env ...string) string {
		t.Helper()
		out, err := runCmd(append([]string{"NIXCELL_NIX_CONF=" + conf, "NIXCELL_SUBSTITUTER=" + url, "NIXCELL_OFFLINE="}, env...),
			"bash", "scripts/nix-substituters.sh")
		if err != nil {
			t.Fatalf("nix-substituters.sh: %v: %s", err, out)
		}
		return out
	}
	off := func() bool { return strings.Contains(read(), "\nsubstituters =\n") }

	steps := []struct {
		what, url string
		env       []string
		says      string
		off       bool
	}{
		{"a cache that answers", cache.URL, nil, "binary caches left on", false},
		{"no cache", gone, nil, "binary caches turned off", true},
		{"no cache, again", gone, nil, "binary caches stay off", true},
		{"the cache answers again", cache.URL, nil, "binary caches turned back on", false},
		{"asked to be offline", cache.URL, []string{"NIXCELL_OFFLINE=1"}, "turned off in " + conf + " (NIXCELL_OFFLINE=1)", true},
		{"asked to be online", gone, []string{"NIXCELL_OFFLINE=0"}, "turned back on in " + conf + " (NIXCELL_OFFLINE=0)", false},
	}
	for _, s := range steps {
		if got := run(s.url, s.env...); !strings.Contains(got, s.says) {
			t.Errorf("%s: says %q, want %q", s.what, got, s.says)
		}
		if off() != s.off {
			t.Errorf("%s: caches off = %v, want %v:\n%s", s.what, off(), s.off, read())
		}
	}
	if read() != base {
		t.Errorf("back on, nix.conf is\n%s\nwant\n%s", read(), base)
	}

	start := time.Now()
	if got := run("http://" + silent.Addr().String()); !strings.Contains(got, "does not answer within 5 s") {
		t.Errorf("a cache that never answers: %q", got)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the probe of a silent cache took %s", took)
	}

	// The administrator's own setting is never touched.
	own := base + "substituters = https://cache.example.org\n"
	if err := os.WriteFile(conf, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run(gone, "NIXCELL_OFFLINE=1"); !strings.Contains(got, "sets substituters itself; left as it is") || read() != own {
		t.Errorf("with the administrator's substituters: says %q, nix.conf\n%s", got, read())
	}
}
