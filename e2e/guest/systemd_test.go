package guest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestSystemdHost shows nixcell on a systemd + cgroup v2 host (issue 17):
// a detached container's cgroup is a scope systemd made, in nixcell's
// slice, and daemon-reload and daemon-reexec leave it running; the
// nixcell@.service template runs a container as a unit (readiness, the
// journal, reload switching in place, enablement as autostart); machined
// lists the containers and powers them off cleanly; and after a reboot the
// enabled container is back with its addresses, generation and data while
// the other is stopped and every command works on it.
func TestSystemdHost(t *testing.T) {
	img := BuildImage(t)
	bin := buildBinaries(t)
	root, err := filepath.Abs(testutil.ProjectRoot())
	if err != nil {
		t.Fatal(err)
	}
	vm := Boot(t, img, Options{Shares: []Share{{Host: root, Guest: root}, {Host: bin, Guest: binDir}}})
	// A copy on the guest's own disk: the units run it at boot, before
	// the test's shares are mounted again.
	nc := "/usr/local/bin/nixcell"
	vm.Must(t, "install -m 0755 "+binDir+"/nixcell "+nc)
	nixArgs := fmt.Sprintf(`-n "-I nixpkgs=%s/fixtures/nixpkgs"`, root)
	create := func(name, config string) {
		t.Helper()
		vm.Must(t, fmt.Sprintf("%s create -q %s -c %s %s", nc, name, shellQuote(config), nixArgs))
	}
	label := func(name string) string {
		return strings.TrimSpace(vm.Must(t, fmt.Sprintf("%s exec %s -- cat /etc/nixcell-fixture/label", nc, name)))
	}
	pidOf := func(name string) string {
		return strings.TrimSpace(vm.Must(t, fmt.Sprintf("%s state --json %s | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'", nc, name)))
	}

	t.Run("scope", func(t *testing.T) {
		create("detached", `{ configuration = { services.httpd.enable = true; }; }`)
		vm.Must(t, nc+" start detached")
		pid := pidOf("detached")
		cgroup := vm.Must(t, "cat /proc/"+pid+"/cgroup")
		if !strings.Contains(cgroup, "0::/nixcell.slice/nixcell-detached.scope") {
			t.Errorf("the init's cgroup: %q, want nixcell.slice/nixcell-detached.scope", cgroup)
		}
		status := vm.Must(t, "systemctl status --no-pager nixcell-detached.scope")
		if !strings.Contains(status, "Active: active (running)") || !strings.Contains(status, pid) {
			t.Errorf("systemctl status of the scope:\n%s", status)
		}
		if out := vm.Must(t, "systemd-cgls --no-pager /nixcell.slice"); !strings.Contains(out, "nixcell-detached.scope") {
			t.Errorf("systemd-cgls:\n%s", out)
		}
		vm.Must(t, "systemctl daemon-reload && systemctl daemon-reexec && sleep 2")
		if got := pidOf("detached"); got != pid {
			t.Errorf("after daemon-reload and daemon-reexec the init is %q, was %s", got, pid)
		}
		vm.Must(t, nc+" exec detached -- true")
		// Limits through systemd's cgroup.
		vm.Must(t, nc+" update detached --memory 300M --pids 123")
		if got := vm.Must(t, "cat /sys/fs/cgroup/nixcell.slice/nixcell-detached.scope/pids.max"); got != "123\n" {
			t.Errorf("pids.max of the scope: %q", got)
		}
		if out := vm.Must(t, "machinectl list --no-pager"); !strings.Contains(out, "detached") {
			t.Errorf("machinectl list:\n%s", out)
		}
		vm.Must(t, nc+" stop detached")
		if r := vm.Run(t, "systemctl is-active nixcell-detached.scope"); r.Code == 0 {
			t.Errorf("the scope outlived the container: %s", r)
		}
	})

	t.Run("checkpoint", func(t *testing.T) {
		// Debian 12's CRIU 3.17 works on this kernel: a process that
		// counts in its memory counts on after a checkpoint and a restore
		// of the (unprivileged) container.
		create("ckpt", `{ services.httpd.enable = true; services.httpd.text = "ckpt\n"; services.echo.enable = true; }`)
		vm.Must(t, nc+" start ckpt")
		vm.Must(t, nc+` exec ckpt -- sh -c "setsid sh -c 'i=0; while :; do i=\$((i+1)); echo \$i > /run/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &"`)
		count := func() int {
			t.Helper()
			n, err := strconv.Atoi(strings.TrimSpace(vm.Must(t, nc+" exec ckpt -- cat /run/count")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		time.Sleep(time.Second)
		logs := func() string {
			return "; CRIU's log: " + vm.Run(t, "tail -20 /var/lib/nixcell/containers/ckpt/checkpoint.*/*.log").Stdout
		}

		// Its service answers on its address before and after: the
		// restored network namespace gets its interfaces again, and the
		// listening socket comes back.
		addr := strings.TrimSpace(vm.Must(t, nc+` show-ip --json ckpt | sed -n 's/.*"ipv4": *"\([0-9.]*\)".*/\1/p'`))
		// (Debian 12's static busybox wget crashes with -T.)
		get := "timeout 10 busybox wget -q -O - http://" + addr + "/"
		if got := vm.Must(t, get); got != "ckpt\n" {
			t.Fatalf("the service before the checkpoint: %q", got)
		}

		before := count()
		r := vm.Run(t, nc+" checkpoint ckpt")
		if r.Code != 0 || !strings.Contains(r.Stderr, "stopped it") {
			t.Fatalf("checkpoint: %s%s", r, logs())
		}
		if r := vm.Run(t, nc+" state ckpt"); r.Code != 3 {
			t.Errorf("after the checkpoint: %s, want it stopped", r)
		}
		r = vm.Run(t, nc+" restore-checkpoint ckpt")
		if r.Code != 0 {
			t.Fatalf("restore-checkpoint: %s%s", r, logs())
		}
		c1 := count()
		time.Sleep(time.Second)
		c2 := count()
		t.Logf("count %d at the checkpoint, %d and a second later %d after the restore", before, c1, c2)
		if c1 < before || c2 <= c1 {
			t.Errorf("the count after the restore: %d, then %d; it was %d before", c1, c2, before)
		}
		if r := vm.Run(t, get); r.Code != 0 || r.Stdout != "ckpt\n" {
			t.Errorf("the service after the restore, at %s: %s", addr, r)
		}
		if vm.Run(t, "ls /var/lib/nixcell/containers/ckpt/checkpoint.json").Code == 0 {
			t.Errorf("the checkpoint stays after its restore")
		}
		if r := vm.Run(t, nc+" restore-checkpoint ckpt"); r.Code == 0 {
			t.Errorf("a second restore-checkpoint: %s", r)
		}

		// An established TCP connection: a client on the host keeps one
		// open to the container's echo service. A checkpoint without
		// --tcp-established refuses with CRIU's reason and leaves the
		// container running; with it, the connection goes on after the
		// restore. (On a container started afresh: CRIU 3.17 cannot
		// restore a second checkpoint of restored processes, whose console
		// it re-made: "Can't re-create deleted file .../dev/pts/0".)
		vm.Must(t, nc+" restart ckpt")
		for i := 0; ; i++ {
			if r := vm.Run(t, "echo ping | timeout 5 busybox nc "+addr+" 7"); r.Stdout == "ping\n" {
				break
			} else if i == 50 {
				t.Fatalf("the echo service after the restart: %s", r)
			}
			time.Sleep(200 * time.Millisecond)
		}
		vm.Must(t, "rm -f /tmp/tin /tmp/tout && mkfifo /tmp/tin")
		vm.Must(t, "setsid sh -c 'sleep 600 > /tmp/tin & echo $! > /tmp/tin.pid; busybox nc "+addr+" 7 < /tmp/tin > /tmp/tout 2>/tmp/tout.err; echo nc ended $? >> /tmp/tout.err' </dev/null >/dev/null 2>&1 &")
		send := func(line string) {
			t.Helper()
			// Bounded: with no reader (the client gone) the write would
			// wait for ever.
			if r := vm.Run(t, "timeout 10 sh -c 'echo "+line+" > /tmp/tin'"); r.Code != 0 {
				t.Fatalf("sending %q to the client: %s; its errors: %s", line, r, vm.Run(t, "cat /tmp/tout.err"))
			}
		}
		echoed := func(want string) {
			t.Helper()
			var got string
			for i := 0; i < 50; i++ {
				if got = vm.Must(t, "cat /tmp/tout"); got == want {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Fatalf("echoed over the connection: %q, want %q; the client's errors: %s", got, want, vm.Run(t, "cat /tmp/tout.err"))
		}
		send("one")
		echoed("one\n")
		if r := vm.Run(t, nc+" checkpoint ckpt"); r.Code == 0 || !strings.Contains(r.Stderr, "CRIU cannot checkpoint it") {
			t.Errorf("a checkpoint with a connection open, without --tcp-established: %s", r)
		}
		vm.Must(t, nc+" exec ckpt -- true")
		if r := vm.Run(t, nc+" checkpoint --tcp-established ckpt"); r.Code != 0 {
			t.Fatalf("checkpoint --tcp-established: %s%s", r, logs())
		}
		if r := vm.Run(t, nc+" restore-checkpoint ckpt"); r.Code != 0 {
			t.Fatalf("restore-checkpoint of established connections: %s%s", r, logs())
		}
		send("two")
		echoed("one\ntwo\n")
		vm.Run(t, "kill $(cat /tmp/tin.pid); rm -f /tmp/tin /tmp/tin.pid /tmp/tout /tmp/tout.err")
		vm.Must(t, nc+" stop ckpt && "+nc+" destroy ckpt")
	})

	t.Run("units", func(t *testing.T) {
		out := vm.Must(t, nc+" install-units")
		if strings.TrimSpace(out) != "/etc/systemd/system/nixcell@.service" {
			t.Errorf("install-units: %q", out)
		}
		create("web", `{ autostart = true; configuration = { system.fixture.label = "one"; services.httpd.enable = true; }; }`)
		if got := vm.Run(t, "systemctl is-enabled nixcell@web"); strings.TrimSpace(got.Stdout) != "enabled" {
			t.Errorf("autostart = true did not enable the unit: %s", got)
		}
		vm.Must(t, "systemctl start nixcell@web")
		if got := vm.Must(t, "systemctl is-active nixcell@web"); got != "active\n" {
			t.Errorf("the unit is %q", got)
		}
		pid := pidOf("web")
		if cg := vm.Must(t, "cat /proc/"+pid+"/cgroup"); !strings.Contains(cg, "nixcell@web.service/payload") {
			t.Errorf("the init's cgroup under its unit: %q", cg)
		}
		if j := vm.Must(t, "journalctl -u nixcell@web --no-pager -o cat"); !strings.Contains(j, "fixture: start label=one") {
			t.Errorf("the journal lacks the container's console:\n%s", j)
		}
		m := vm.Must(t, "machinectl status --no-pager web")
		if !strings.Contains(m, "Leader: "+pid) || !strings.Contains(m, "nixcell@web.service") {
			t.Errorf("machinectl status:\n%s", m)
		}
		// Reload: the new generation switched in place, the init the same.
		// Reload: a new current generation (set by the host's own nix-env,
		// as a host that manages the profile would) switched in place, the
		// init the same.
		create("two", `{ configuration = { system.fixture.label = "two"; services.httpd.enable = true; }; }`)
		system := strings.TrimSpace(vm.Must(t, nc+` state --json two | sed -n 's/.*"system": *"\([^"]*\)".*/\1/p'`))
		vm.Must(t, "nix-env -p /nix/var/nix/profiles/per-container/web/system --set "+system)
		vm.Must(t, "systemctl reload nixcell@web")
		if got := label("web"); got != "two" {
			t.Errorf("after systemctl reload the label is %q", got)
		}
		if got := pidOf("web"); got != pid {
			t.Errorf("reload restarted the container: init %s, was %s", got, pid)
		}
		// machinectl poweroff stops it cleanly; the unit ends successfully.
		vm.Must(t, "machinectl poweroff web")
		waitGuest(t, vm, "the unit to stop", "! systemctl is-active --quiet nixcell@web")
		if r := vm.Run(t, "systemctl show -p Result --value nixcell@web"); strings.TrimSpace(r.Stdout) != "success" {
			t.Errorf("the unit's result after poweroff: %s", r)
		}
		if log := vm.Must(t, fmt.Sprintf("%s exec web -- true 2>&1 || cat /var/lib/nixcell/containers/web/root/var/log/nixcell-fixture.log", nc)); !strings.Contains(log, "stop signal=RTMIN+4") {
			t.Errorf("the init did not stop on machinectl's signal:\n%s", log)
		}
		vm.Must(t, "systemctl start nixcell@web")
	})

	t.Run("debian-systemd-guest", func(t *testing.T) {
		// A real systemd guest on this cgroup v2 host, with delegation
		// working inside: systemd-run makes a unit with a memory limit.
		// The image holds the tree (scripts/guest/build-image.sh).
		vm.Must(t, nc+" create deb --rootfs /var/lib/machines/deb --init /lib/systemd/systemd")
		vm.Must(t, nc+" start --wait --timeout 4m deb")
		if got := vm.Run(t, nc+" exec deb -- systemctl is-system-running --wait"); strings.TrimSpace(got.Stdout) != "running" {
			t.Errorf("the Debian guest's systemd: %s\n%s", got, vm.Run(t, nc+" exec deb -- systemctl --failed --no-pager").Stdout)
		}
		if r := vm.Run(t, nc+" exec deb -- systemd-run -p MemoryMax=50M --wait true"); r.Code != 0 {
			t.Errorf("systemd-run with a memory limit inside: %s", r)
		}
		// machined opens a shell through the guest's own systemd, on a
		// terminal: machinectl needs one on its side too (with stdin at
		// EOF it hangs up before the shell starts, and the guest's
		// systemd fails to set the terminal up), so script gives it one.
		if r := vm.Run(t, `timeout 120 script -qec "machinectl shell deb /bin/sh -c 'echo shell-works > /root/shell-proof'" /dev/null`); r.Code != 0 {
			t.Errorf("machinectl shell: %s", r)
		}
		if got := vm.Run(t, nc+" exec deb -- cat /root/shell-proof"); strings.TrimSpace(got.Stdout) != "shell-works" {
			t.Errorf("the command machinectl shell ran left %s", got)
		}
		vm.Must(t, nc+" stop --timeout 2m deb && "+nc+" destroy deb")
	})

	t.Run("kernel-6.1", func(t *testing.T) {
		// Idmapped mounts of tmpfs arrived in Linux 6.3: a bind mount that
		// needs one is refused at start, naming the kernel feature.
		vm.Must(t, "mkdir -p /srv/tmp && mount -t tmpfs tmpfs /srv/tmp")
		create("tmpbind", `{ bindMounts."/data" = { hostPath = "/srv/tmp"; isReadOnly = false; writeAsHostRoot = true; }; configuration = { }; }`)
		r := vm.Run(t, nc+" start tmpbind")
		if r.Code != 1 || !strings.Contains(r.Stderr, "/srv/tmp is on tmpfs, whose idmapped mounts need Linux 6.3 (this is 6.1)") {
			t.Errorf("start with an idmapped tmpfs bind on 6.1: %s", r)
		}
		// Without the idmapping it is an ordinary bind, which 6.1 has.
		vm.Must(t, fmt.Sprintf("%s update -q tmpbind -c %s %s", nc, shellQuote(`{ bindMounts."/data" = { hostPath = "/srv/tmp"; isReadOnly = false; }; configuration = { }; }`), nixArgs))
		vm.Must(t, nc+" start tmpbind && "+nc+" destroy tmpbind")
	})

	t.Run("reboot", func(t *testing.T) {
		create("loose", `{ configuration = { services.httpd.enable = true; }; }`)
		vm.Must(t, nc+" start loose")
		vm.Must(t, nc+" exec web -- sh -c 'echo kept > /root/data'")
		before := vm.Must(t, nc+" show-ip web && "+nc+" list-generations web")
		vm.Reboot(t)
		waitGuest(t, vm, "web to come back", "systemctl is-active --quiet nixcell@web")
		if got := vm.Must(t, nc+" show-ip web && "+nc+" list-generations web"); got != before {
			t.Errorf("after the reboot:\n%s\nbefore:\n%s", got, before)
		}
		if got := vm.Must(t, nc+" exec web -- cat /root/data"); got != "kept\n" {
			t.Errorf("data after the reboot: %q", got)
		}
		if r := vm.Run(t, nc+" state loose"); r.Code != 3 {
			t.Errorf("state of the container that was not enabled: %s", r)
		}
		if out := vm.Must(t, nc+" list"); !regexp.MustCompile(`(?m)^loose\s+stopped`).MatchString(out) {
			t.Errorf("list after the reboot:\n%s", out)
		}
		vm.Must(t, nc+" start loose && "+nc+" exec loose -- true && "+nc+" destroy loose")
		if r := vm.Run(t, nc+" doctor"); r.Code != 0 {
			t.Errorf("doctor after the reboot: %s", r)
		}
	})
	t.Run("nixos-module-units", func(t *testing.T) {
		// The units the NixOS module writes (nix/tests/host.nix, rendered
		// by nix/tests/render.nix in its two generations), under a real
		// systemd: started, then the second generation activated as
		// NixOS's switch-to-configuration does it for a unit whose
		// X-Reload-Triggers changed — daemon-reload, then reload — which
		// switches the container in place.
		gens := map[int]string{}
		for _, g := range []int{1, 2} {
			expr := fmt.Sprintf(`import %[1]s/nix/tests/render.nix { configuration = import %[1]s/nix/tests/host.nix { generation = %[2]d; names = { web = "mweb"; }; }; }`, root, g)
			out, err := exec.Command("nix-build", "--no-out-link", "-I", "nixpkgs="+root+"/fixtures/nixpkgs", "-E", expr).Output()
			if err != nil {
				t.Fatalf("rendering generation %d: %v", g, err)
			}
			gens[g] = strings.TrimSpace(string(out))
		}
		// Their store paths (units, settings, systems) into the guest's store.
		closure, err := exec.Command("nix-store", "-qR", gens[1], gens[2]).Output()
		if err != nil {
			t.Fatal(err)
		}
		export, err := exec.Command("nix-store", append([]string{"--export"}, strings.Fields(string(closure))...)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if r := vm.RunIn(t, export, "nix-store --import >/dev/null"); r.Code != 0 {
			t.Fatalf("importing the rendered closure: %s", r)
		}
		vm.Must(t, "mkdir -p /run/current-system/sw/bin && ln -sf "+nc+" /run/current-system/sw/bin/nixcell")
		install := func(g int) {
			vm.Must(t, fmt.Sprintf("cp -rL --remove-destination %s/etc/. /etc/ && systemctl daemon-reload", gens[g]))
		}
		install(1)
		vm.Must(t, "systemctl start nixcell@mweb")
		pid := pidOf("mweb")
		if got := label("mweb"); got != "web-1" {
			t.Errorf("the declared container runs %q", got)
		}
		vm.Must(t, "cp -r /etc/systemd/system /tmp/old-units")
		install(2)
		plan := vm.Must(t, fmt.Sprintf("sh %s/activate.sh /tmp/old-units /etc/systemd/system", gens[2]))
		if !strings.Contains(plan, "will switch in place (its system or limits changed): mweb") {
			t.Errorf("the activation's plan:\n%s", plan)
		}
		vm.Must(t, "systemctl reload nixcell@mweb")
		if got := label("mweb"); got != "web-2" {
			t.Errorf("after the reload the declared container runs %q, want web-2", got)
		}
		if got := pidOf("mweb"); got != pid {
			t.Errorf("the reload restarted the container: init %s, was %s", got, pid)
		}
		if got := vm.Must(t, nc+" state --json mweb"); !strings.Contains(got, `"generation": 2`) {
			t.Errorf("after the reload:\n%s", got)
		}
		vm.Must(t, "systemctl stop nixcell@mweb")
	})

	vm.PowerOff(t)
}

// waitGuest polls a shell condition in the guest for up to two minutes
// (the guest runs under emulation).
func waitGuest(t *testing.T, vm *VM, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for vm.Run(t, cond).Code != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the journal's end:\n%s", what, vm.Run(t, "journalctl -b --no-pager -n 60").Stdout)
		}
		time.Sleep(time.Second)
	}
}
