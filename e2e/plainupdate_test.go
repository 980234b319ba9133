package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestPlainRootUpdate changes the host-side settings of a plain root
// container (create --rootfs) after create, as of any other: limits at
// once while it runs, a bind mount and a port forward at its restart;
// only the generation operations do not apply to it.
func TestPlainRootUpdate(t *testing.T) {
	in := newInstance(t)
	dir := busyboxRoot(t)
	name := testutil.Name("rc")
	in.must("create", name, "--rootfs", dir)
	in.must("start", "--wait", name)

	memoryLimit := func() uint64 {
		t.Helper()
		var s struct {
			Memory struct{ LimitBytes uint64 } `json:"memory"`
			Pids   struct{ Limit uint64 }      `json:"pids"`
		}
		if err := json.Unmarshal([]byte(in.must("stats", "--json", name)), &s); err != nil {
			t.Fatal(err)
		}
		return s.Memory.LimitBytes
	}
	if r := in.run("update", name, "-c", `{ limits.memory = "150M"; }`); r.code != 0 || !strings.Contains(r.stderr, name+": settings updated") {
		t.Fatalf(`update -c '{ limits.memory = "150M"; }' of a running plain root: %s`, r)
	}
	if got := memoryLimit(); got != 150<<20 {
		t.Errorf("memory limit after update -c: %d", got)
	}
	// A flag overrides the settings' limit from now on.
	r := in.run("update", name, "--memory", "200M")
	if r.code != 0 || !strings.Contains(r.stderr, "limits now memory 200MiB") {
		t.Fatalf("update --memory of a running plain root: %s", r)
	}
	if got := memoryLimit(); got != 200<<20 {
		t.Errorf("memory limit after update --memory 200M: %d", got)
	}

	// A bind mount and a forward apply when it restarts.
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "index.html"), []byte("served from the bind mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freeTCPPort(t)
	settings := fmt.Sprintf(`{ limits.memory = "150M"; bindMounts."/srv" = { hostPath = %q; };
  network.forwardPorts = [ { hostPort = %d; containerPort = 8080; } ]; }`, host, port)
	r = in.run("update", name, "-c", settings)
	if r.code != 0 || !strings.Contains(r.stderr, "the network, bindMounts settings of "+name+" changed; they apply when it restarts") {
		t.Fatalf("update of a running plain root's mounts and forwards: %s", r)
	}
	if r := in.run("exec", name, "--", "test", "-e", "/srv/index.html"); r.code == 0 {
		t.Errorf("the bind mount appeared before a restart")
	}
	if r := in.run("update", name, "--restart"); r.code != 0 || !strings.Contains(r.stderr, "restarted with them") {
		t.Fatalf("update --restart: %s", r)
	}
	in.exec(name, "sh", "-c", "httpd -p 8080 -h /srv")
	var body string
	var err error
	waitFor(t, 10*time.Second, "the forward to answer", func() bool {
		body, err = httpGet(t, "", fmt.Sprintf("127.0.0.1:%d", port))
		return err == nil && body == "served from the bind mount\n"
	})
	if got := memoryLimit(); got != 200<<20 {
		t.Errorf("memory limit after the restart: %d", got)
	}

	// Stopped: recorded for the next start.
	in.must("stop", name)
	if r := in.run("update", name, "--pids", "321"); r.code != 0 || !strings.Contains(r.stderr, "they apply at its next start") {
		t.Errorf("update --pids of a stopped plain root: %s", r)
	}
	in.must("start", name)
	var st struct {
		Limits struct {
			Pids int64 `json:"pids"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(in.must("state", "--json", name)), &st); err != nil || st.Limits.Pids != 321 {
		t.Errorf("limits after the start: %+v (%v)", st, err)
	}

	// Generations still do not apply.
	system := prebuilt(t, "{ }")
	for _, args := range [][]string{{"update", name, "--system", system}, {"rollback", name}, {"switch-generation", name, "1"},
		{"list-generations", name}, {"delete-generations", name, "old"}} {
		r := in.run(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "nixcell: "+args[0]+" "+name+": does not apply: it boots the plain root file system "+dir) {
			t.Errorf("%v: %s", args, r)
		}
	}
}

// freeTCPPort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
