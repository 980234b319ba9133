package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// declaredHost is a NixOS host configuration with one container declared
// through the NixOS module, in generation gen: its system (a web page and a
// label) and its process limit change from one generation to the next.
func (in *instance) declaredHost(name string) string {
	env := map[string]string{}
	for _, kv := range in.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return nixFile(in.t, "host.nix", fmt.Sprintf(`{ generation }: { ... }: {
  services.nixcell = { enable = true; hostOnlySubnet = %q; natSubnet = %q; };
  nixcell.containers.%s = {
    config = { services.httpd.enable = true; services.httpd.text = "gen ${toString generation}\n"; system.fixture.label = "gen-${toString generation}"; };
    limits.pids = 100 * generation;
  };
}`, env["NIXCELL_HOSTONLY_SUBNET"], env["NIXCELL_NAT_SUBNET"], name))
}

// render builds the files the module installs for the host in a generation
// (nix/tests/render.nix) and returns their directory.
func render(t *testing.T, host string, gen int) string {
	t.Helper()
	expr := fmt.Sprintf(`import %s/nix/tests/render.nix { configuration = import %s { generation = %d; }; }`, testutil.ProjectRoot(), host, gen)
	out, err := exec.Command("nix-build", "--no-out-link", "-I", "nixpkgs="+testutil.FixtureNixpkgs(), "-E", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("rendering generation %d: %v: %s", gen, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// conf reads a rendered unit's environment file.
func (in *instance) conf(dir, name string) map[string]string {
	in.t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "etc/nixcell/containers", name+".conf"))
	if err != nil {
		in.t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// applyDeclared runs the unit's ExecStartPre (prepare) or ExecReload
// (reload) as the unit would: with its environment file.
func (in *instance) applyDeclared(dir, action, name string) result {
	in.t.Helper()
	cmd := exec.Command(filepath.Join(dir, "etc/nixcell/apply-declared"), action, name)
	cmd.Env = []string{"NIXCELL_BIN=" + bin, "NIXCELL_STATE_DIR=" + in.dir}
	for k, v := range in.conf(dir, name) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			in.t.Fatalf("running apply-declared: %v", err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

// TestDeclaredContainer runs what the NixOS module's unit runs for a
// declared container: ExecStartPre makes its system, built as part of the
// host's configuration, a generation of the same profile nixcell create
// makes, with the host-side settings from the module; ExecStart runs it in
// the foreground; a new host generation's ExecReload switches it in place;
// list-generations and rollback work on it. The unit under systemd is the
// guest tier's.
func TestDeclaredContainer(t *testing.T) {
	in := newInstance(t)
	name := testutil.Name("decl")
	host := in.declaredHost(name)
	gen1, gen2 := render(t, host, 1), render(t, host, 2)

	if r := in.applyDeclared(gen1, "prepare", name); r.code != 0 {
		t.Fatalf("prepare (ExecStartPre) of a new container: %s", r)
	}
	if got := in.numbers(name); got != "1c" {
		t.Fatalf("generations after prepare: %s, want 1c", got)
	}
	run := in.cmd("run", "--timeout", "80s", name) // the unit's ExecStart
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	defer func() {
		if run.ProcessState == nil {
			_ = run.Process.Kill()
			<-exited
		}
	}()
	in.waitHTTP(name, "gen 1\n")
	if got := in.kernelLimits(name).pids; got != "100" {
		t.Errorf("pids limit %s, want 100 (the module's limits.pids)", got)
	}

	r := in.applyDeclared(gen2, "reload", name)
	if r.code != 0 || !strings.Contains(r.stderr, "switched in place") {
		t.Fatalf("reload (ExecReload) to the second generation: %s", r)
	}
	if got := in.numbers(name); got != "1 2cr" {
		t.Errorf("generations after reload: %s, want 1 2cr", got)
	}
	in.waitHTTP(name, "gen 2\n")
	if got := strings.TrimSpace(in.exec(name, "cat", "/etc/nixcell-fixture/label")); got != "gen-2" {
		t.Errorf("label %q after the switch, want gen-2", got)
	}
	if got := in.kernelLimits(name).pids; got != "200" {
		t.Errorf("pids limit %s after reload, want 200", got)
	}
	if got := nixEnvGenerations(t, name); got != "1 2c" {
		t.Errorf("nix-env sees generations %s, want 1 2c", got)
	}
	if r := in.applyDeclared(gen2, "prepare", name); r.code == 0 || !strings.Contains(r.stderr, "is running outside its unit") {
		t.Errorf("prepare of a running container: %s", r)
	}

	in.must("rollback", name)
	in.waitHTTP(name, "gen 1\n")
	if got := in.numbers(name); got != "1cr 2" {
		t.Errorf("generations after rollback: %s, want 1cr 2", got)
	}

	// The unit stops: SIGTERM to run, a clean stop, exit status 0.
	_ = run.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30 s of SIGTERM")
	}
	// Stopped: the next start's prepare makes the declared system current again.
	if r := in.applyDeclared(gen2, "prepare", name); r.code != 0 || !strings.Contains(r.stderr, "boots at next start") {
		t.Fatalf("prepare of a stopped container: %s", r)
	}
	in.must("start", name)
	in.waitHTTP(name, "gen 2\n")

	// Next to a given system a configuration holds host-side settings only.
	other := testutil.Name("decl")
	if r := in.run("create", other, "--system", in.conf(gen1, name)["NIXCELL_SYSTEM"], "-c", "{ configuration = { }; }"); r.code != 1 || !strings.Contains(r.stderr, "this container's system is given (--system or --rootfs)") {
		t.Errorf("create --system with a NixOS configuration: %s", r)
	}
}
