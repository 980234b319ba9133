// Package guest owns the test tier that boots a systemd + cgroup v2 host
// inside this machine: a Debian 12 virtual machine (systemd 252 as PID 1,
// cgroup v2 with every controller, kernel 6.1), made once by
// scripts/guest/build-image.sh and booted with qemu, and driven over ssh
// on loopback. Tests boot a VM, share host directories with it (9p), run
// commands in it as root, reboot it and power it off; qemu is always ended
// when the test ends, and a guest that does not come up fails the test.
package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// Timeouts under emulation (TCG), where the guest runs several times
// slower than this machine.
const (
	bootTimeout     = 5 * time.Minute
	poweroffTimeout = 2 * time.Minute
)

// Image is a built guest image (see scripts/guest/build-image.sh).
type Image struct {
	Dir                  string
	Disk, Kernel, Initrd string
	Key                  string // ssh key of the guest's root
	KernelRelease        string
	BuildTime            time.Duration // of this process's build-image.sh (short when cached)
}

var (
	imageOnce sync.Once
	image     Image
	imageErr  error
)

// BuildImage makes the guest image, or finds it cached, once per process.
// A failure fails the test: under CI the tier must run.
func BuildImage(t testing.TB) Image {
	t.Helper()
	testutil.RequiresRoot(t)
	imageOnce.Do(func() {
		start := time.Now()
		cmd := exec.Command("bash", filepath.Join(testutil.ProjectRoot(), "scripts", "guest", "build-image.sh"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			imageErr = fmt.Errorf("scripts/guest/build-image.sh: %v\n%s", err, stderr.String())
			return
		}
		dir := strings.TrimSpace(string(out))
		ready, err := os.ReadFile(filepath.Join(dir, "ready"))
		if err != nil {
			imageErr = fmt.Errorf("guest image in %q: %w", dir, err)
			return
		}
		image = Image{Dir: dir, Disk: filepath.Join(dir, "disk.raw"), Kernel: filepath.Join(dir, "vmlinuz"),
			Initrd: filepath.Join(dir, "initrd.img"), Key: filepath.Join(dir, "id_ed25519"),
			KernelRelease: strings.TrimSpace(strings.TrimPrefix(string(ready), "kernel "))}
		image.BuildTime = time.Since(start)
		t.Logf("guest image %s (kernel %s), ready after %v\n%s", dir, image.KernelRelease, image.BuildTime.Round(time.Second), stderr.String())
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return image
}

var (
	accelOnce       sync.Once
	accel, accelWhy string
)

// Accelerator chooses KVM or TCG, once per process. /dev/kvm may exist
// and still not work (nested virtualisation here: a KVM guest hangs before
// its kernel prints anything), so KVM is used only when a probe boots the
// guest kernel to its first console lines within a bound; NIXCELL_GUEST_ACCEL
// (kvm or tcg) skips the probe.
func Accelerator(t testing.TB, img Image) string {
	t.Helper()
	accelOnce.Do(func() {
		if a := os.Getenv("NIXCELL_GUEST_ACCEL"); a != "" {
			accel, accelWhy = a, "NIXCELL_GUEST_ACCEL says so"
			return
		}
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			accel, accelWhy = "tcg", fmt.Sprintf("KVM is not available (%v)", err)
			return
		}
		f.Close()
		// With no root file system the kernel panics at once, and with
		// panic=-1 and -no-reboot qemu then exits: under KVM that takes
		// about a second, under TCG about five.
		const bound = 10 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-nodefaults", "-vga", "none",
			"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
			"-kernel", img.Kernel, "-append", "console=ttyS0 panic=-1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, _ := cmd.Output()
		if bytes.Contains(out, []byte("Kernel panic")) {
			accel, accelWhy = "kvm", "a probe booted the guest kernel under KVM"
			return
		}
		why := fmt.Sprintf("a KVM probe printed nothing within %v", bound)
		if ctx.Err() == nil {
			why = fmt.Sprintf("a KVM probe failed (%q)", lastLines(string(out), 3))
		}
		accel, accelWhy = "tcg", why+": /dev/kvm is there but does not work (nested virtualisation?), so the guest is emulated"
	})
	t.Logf("guest accelerator: %s (%s)", accel, accelWhy)
	return accel
}

// Share is a host directory the guest mounts (read-only, 9p) at Guest.
type Share struct{ Host, Guest string }

// Options say how to boot a VM.
type Options struct {
	MemoryMB int // default 3072
	CPUs     int // default 2
	Shares   []Share
}

// VM is a running guest.
type VM struct {
	img      Image
	opts     Options
	dir      string // overlay disk, console log, ssh control socket
	port     int    // the guest's ssh port on 127.0.0.1
	qemu     *exec.Cmd
	exited   chan struct{} // closed when qemu has exited
	master   *exec.Cmd     // ssh connection that later commands share
	lost     bool          // an ssh to it failed (see RunIn)
	bootID   string
	BootTime time.Duration // of the last boot, until systemd was up
}

// Boot starts a guest from the image (changes go to an overlay that is
// thrown away) and waits until its systemd has finished starting up. qemu
// is killed when the test ends, however it ends.
func Boot(t testing.TB, img Image, opts Options) *VM {
	t.Helper()
	testutil.RequiresCommands(t, "qemu-system-x86_64", "qemu-img", "ssh")
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 3072
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
	}
	vm := &VM{img: img, opts: opts, dir: t.TempDir(), exited: make(chan struct{})}
	overlay := filepath.Join(vm.dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", img.Disk, "-F", "raw", overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	vm.port = freePort(t)
	acc := Accelerator(t, img)
	args := []string{"-accel", acc, "-m", strconv.Itoa(opts.MemoryMB), "-smp", strconv.Itoa(opts.CPUs),
		"-nodefaults", "-vga", "none", "-display", "none",
		// The monitor answers diagnosis (is the guest running, halted?).
		"-monitor", "unix:" + vm.monitorPath() + ",server=on,wait=off",
		"-serial", "file:" + vm.ConsolePath(),
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", "root=/dev/vda rw console=ttyS0 panic=-1 nokaslr",
		"-drive", "file=" + overlay + ",format=qcow2,if=virtio",
		// The guest reaches nothing but its forwarded ssh port (restrict=on).
		"-netdev", fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", vm.port),
		"-device", "virtio-net-pci,netdev=net0",
		// Entropy from the host, so nothing in the guest waits for its
		// random number generator to be seeded.
		"-device", "virtio-rng-pci"}
	if acc == "kvm" {
		args = append(args, "-cpu", "host")
	}
	for i, s := range opts.Shares {
		args = append(args, "-virtfs", fmt.Sprintf("local,path=%s,mount_tag=share%d,security_model=none,readonly=on", s.Host, i))
	}
	vm.qemu = exec.Command("qemu-system-x86_64", args...)
	// Cleanups do not run when go test panics at its -timeout; qemu must
	// not outlive the test process then either.
	vm.qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var qemuOut bytes.Buffer
	vm.qemu.Stdout, vm.qemu.Stderr = &qemuOut, &qemuOut
	start := time.Now()
	if err := vm.qemu.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	go func() { _ = vm.qemu.Wait(); close(vm.exited) }()
	t.Cleanup(func() {
		vm.stopMaster()
		select {
		case <-vm.exited:
		default:
			_ = vm.qemu.Process.Kill()
			<-vm.exited
		}
		if t.Failed() {
			t.Logf("qemu output:\n%s\nguest console (last lines):\n%s", qemuOut.String(), lastLines(vm.Console(), 40))
		}
	})
	vm.waitUp(t, start, "")
	return vm
}

// ConsolePath is the file the guest's serial console is written to.
func (vm *VM) ConsolePath() string { return filepath.Join(vm.dir, "console.log") }

// Console is what the guest printed on its serial console so far.
func (vm *VM) Console() string {
	data, _ := os.ReadFile(vm.ConsolePath())
	return string(data)
}

// sshArgs are the arguments of every ssh to the guest's root.
func (vm *VM) sshArgs(extra ...string) []string {
	args := []string{"-i", vm.img.Key, "-p", strconv.Itoa(vm.port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes", "-o", "ControlPath=" + filepath.Join(vm.dir, "ssh.ctl")}
	return append(append(args, extra...), "root@127.0.0.1")
}

// waitUp waits until the guest answers on ssh from a boot other than
// the one with boot ID gone ("" at the first boot) and its systemd has
// finished starting up, then mounts the shares. A guest that does not come
// up fails the test.
func (vm *VM) waitUp(t testing.TB, start time.Time, gone string) {
	t.Helper()
	deadline := start.Add(bootTimeout)
	for {
		select {
		case <-vm.exited:
			t.Fatalf("qemu exited while the guest was booting: %v\nconsole:\n%s", vm.qemu.ProcessState, lastLines(vm.Console(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not answer on ssh within %v\nconsole:\n%s", bootTimeout, lastLines(vm.Console(), 40))
		}
		probe := exec.Command("ssh", append(vm.sshArgs("-o", "ConnectTimeout=5", "-o", "ControlMaster=no"), "cat /proc/sys/kernel/random/boot_id")...)
		if out, err := probe.Output(); err == nil && strings.TrimSpace(string(out)) != gone {
			vm.bootID = strings.TrimSpace(string(out))
			break
		}
		time.Sleep(time.Second)
	}
	// One connection that the commands share: a new ssh handshake takes
	// seconds under emulation, a new session on it a tenth of one. It
	// gives up on a guest that does not answer for two minutes, not
	// sooner: under emulation on a busy host a guest can stall for many
	// seconds, and a master that gave up takes its sessions with it.
	vm.master = exec.Command("ssh", vm.sshArgs("-M", "-N", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=24")...)
	vm.master.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := vm.master.Start(); err != nil {
		t.Fatalf("starting the ssh master connection: %v", err)
	}
	ctl := filepath.Join(vm.dir, "ssh.ctl")
	for exec.Command("ssh", vm.sshArgs("-O", "check")...).Run() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the ssh master connection (%s) did not come up", ctl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := vm.Run(t, "systemctl is-system-running --wait")
	switch state := strings.TrimSpace(r.Stdout); state {
	case "running":
	case "degraded":
		t.Logf("the guest's systemd is degraded; failed units:\n%s", vm.Run(t, "systemctl --failed --no-pager --no-legend").Stdout)
	default:
		t.Fatalf("the guest's systemd is %q, not running: %s\n%s", state, r, vm.Run(t, "systemctl --failed --no-pager").Stdout)
	}
	vm.BootTime = time.Since(start)
	for i, s := range vm.opts.Shares {
		vm.Must(t, fmt.Sprintf("mkdir -p %[2]s && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 share%[1]d %[2]s", i, shellQuote(s.Guest)))
	}
	t.Logf("guest up after %v (systemd %s)", vm.BootTime.Round(time.Second), strings.TrimSpace(r.Stdout))
}

// stopMaster ends the shared ssh connection (SIGTERM, so that ssh removes
// its control socket).
func (vm *VM) stopMaster() {
	if vm.master != nil && vm.master.Process != nil {
		_ = vm.master.Process.Signal(syscall.SIGTERM)
		_ = vm.master.Wait()
		vm.master = nil
	}
	_ = os.Remove(filepath.Join(vm.dir, "ssh.ctl"))
}

// Result is a finished command in the guest.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// Run runs a shell command line as root in the guest and returns its
// output and exit status; an ssh failure (exit 255) fails the test. Bound
// long commands inside the guest (timeout(1), -test.timeout): ending the
// ssh client does not end the command.
func (vm *VM) Run(t testing.TB, command string) Result {
	t.Helper()
	return vm.RunIn(t, nil, command)
}

// RunIn is Run with stdin.
func (vm *VM) RunIn(t testing.TB, stdin []byte, command string) Result {
	t.Helper()
	cmd := exec.Command("ssh", append(vm.sshArgs("-o", "ControlMaster=no"), "--", command)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{stdout.String(), stderr.String(), 0}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() != 255:
		r.Code = ee.ExitCode()
	case err != nil:
		vm.lost = true
		t.Fatalf("ssh to the guest (%q): %v: %s\n%s", command, err, stderr.String(), vm.diagnosis())
	}
	return r
}

// Must runs a command in the guest, fails the test unless it exits 0, and
// returns its stdout.
func (vm *VM) Must(t testing.TB, command string) string {
	t.Helper()
	r := vm.Run(t, command)
	if r.Code != 0 {
		t.Fatalf("in the guest: %s: %s", command, r)
	}
	return r.Stdout
}

// CopyIn writes a host file into the guest, with the host file's mode.
func (vm *VM) CopyIn(t testing.TB, hostPath, guestPath string) {
	t.Helper()
	data, err := os.ReadFile(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	q := shellQuote(guestPath)
	r := vm.RunIn(t, data, fmt.Sprintf("mkdir -p $(dirname %s) && cat > %s && chmod %o %s", q, q, fi.Mode().Perm(), q))
	if r.Code != 0 {
		t.Fatalf("copying %s into the guest: %s", hostPath, r)
	}
}

// Reboot reboots the guest (qemu stays, and so does the disk) and waits
// until it is up again, with the shares mounted again.
func (vm *VM) Reboot(t testing.TB) {
	t.Helper()
	before := vm.bootID
	start := time.Now()
	// The connection drops as the guest goes down, so the exit status
	// means nothing.
	_ = exec.Command("ssh", append(vm.sshArgs("-o", "ControlMaster=no"), "--", "systemctl reboot")...).Run()
	vm.stopMaster()
	vm.waitUp(t, start, before)
}

// PowerOff shuts the guest down cleanly and waits for qemu to exit.
func (vm *VM) PowerOff(t testing.TB) {
	t.Helper()
	_ = exec.Command("ssh", append(vm.sshArgs("-o", "ControlMaster=no"), "--", "systemctl poweroff")...).Run()
	vm.stopMaster()
	select {
	case <-vm.exited:
	case <-time.After(poweroffTimeout):
		t.Fatalf("the guest did not power off within %v\n%s", poweroffTimeout, vm.diagnosis())
	}
}

func (vm *VM) monitorPath() string { return filepath.Join(vm.dir, "monitor.sock") }

// diagnosis says what state a guest that stopped answering is in: whether
// the shared ssh connection still stands, whether qemu runs the guest
// (its monitor's status) and burns CPU doing it (a busy guest) or not
// (an idle or hung one), where its CPUs are (kernel or user space), and
// the console's last lines.
func (vm *VM) diagnosis() string {
	var b strings.Builder
	master := "up"
	if err := exec.Command("ssh", vm.sshArgs("-O", "check")...).Run(); err != nil {
		master = "gone (" + err.Error() + ")"
	}
	fmt.Fprintf(&b, "ssh master connection: %s\n", master)
	select {
	case <-vm.exited:
		fmt.Fprintf(&b, "qemu: exited (%v)\n", vm.qemu.ProcessState)
	default:
		before := cpuTicks(vm.qemu.Process.Pid)
		time.Sleep(2 * time.Second)
		used := float64(cpuTicks(vm.qemu.Process.Pid)-before) / 100 / 2 // USER_HZ is 100
		fmt.Fprintf(&b, "qemu: %.0f%% of a CPU over 2 s; monitor: %s\n", used*100, vm.monitor("info status"))
		// Where each CPU is, three times: kernel (CPL 0) or user space (3),
		// halted or not; the kernel runs without KASLR, so a kernel
		// address reads against the image kernel's System.map.
		for range 3 {
			fmt.Fprintf(&b, "  %s\n", cpuPlaces(vm.monitor("info registers -a")))
			time.Sleep(500 * time.Millisecond)
		}
	}
	fmt.Fprintf(&b, "console (last lines):\n%s", lastLines(vm.Console(), 30))
	return b.String()
}

// cpuPlaces sums up the monitor's "info registers -a": each CPU's
// instruction pointer, privilege level and whether it is halted.
func cpuPlaces(registers string) string {
	var places []string
	for _, m := range cpuRegisters.FindAllStringSubmatch(registers, -1) {
		places = append(places, fmt.Sprintf("CPU%s %sIP=%s CPL=%s HLT=%s", m[1], m[2], m[3], m[4], m[5]))
	}
	if places == nil {
		return "no registers: " + lastLines(registers, 2)
	}
	return strings.Join(places, "; ")
}

var cpuRegisters = regexp.MustCompile(`(?s)CPU#(\d+).*?([RE])IP=([0-9a-f]+).*?CPL=(\d).*?HLT=(\d)`)

// cpuTicks is the user and system time process pid used, in clock ticks.
func cpuTicks(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.Atoi(f[11])
	sys, _ := strconv.Atoi(f[12])
	return user + sys
}

// monitor sends one command to qemu's monitor and returns its answer.
func (vm *VM) monitor(command string) string {
	c, err := net.DialTimeout("unix", vm.monitorPath(), 2*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return err.Error()
	}
	// The monitor greets, prompts, echoes the command, answers and prompts
	// again: the answer is complete at the second prompt.
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for bytes.Count(out.Bytes(), []byte("(qemu)")) < 2 {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	// The echo redraws the line at each key; the answer follows its last
	// drawing.
	answer := out.String()
	if i := strings.LastIndex(answer, command); i >= 0 {
		answer = strings.ReplaceAll(answer[i+len(command):], "\x1b[K", "")
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(answer), "(qemu)"))
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
