package runtime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/lifecycle"
)

// Checkpoints with CRIU, through libcontainer. What nixcell adds to
// libcontainer's handling:
//
//   - the init's standard output and error are the console log, a host
//     file that is not in the container's mount namespace, which CRIU
//     refuses ("Can't lookup mount"); it is declared external (CRIU's
//     external file[MNT:INODE]) at the checkpoint and handed back, opened
//     anew, at the restore (inherit-fd), through a CRIU configuration
//     file libcontainer names to CRIU (label org.criu.config), in the
//     container's host directory;
//   - a restore runs in the private mount namespace a start runs in, where
//     the host's directories are staged for the container's bind mounts;
//   - the network namespace is restored empty (CRIU's empty-ns net), and
//     nixcell gives it its interfaces from a hook that CRIU calls once
//     the namespaces exist (setup-namespaces), as a start does before the
//     init runs; listening sockets bound to any address come back, and
//     established TCP connections with CheckpointOptions.TCP.

// CRIUError is a checkpoint or restore that CRIU refused or failed, with
// CRIU's own reason: the error lines of its log.
type CRIUError struct {
	Op string // "checkpoint", "restore", "check" or "install"
	// Reason is CRIU's error lines.
	Reason string
	// Log is CRIU's whole log, kept for a closer look ("" when none).
	Log string
}

// Is makes a CRIU failure fault.Unsupported: what the host's CRIU and
// kernel cannot do.
func (e *CRIUError) Is(target error) bool { return target == fault.Unsupported }

func (e *CRIUError) Error() string {
	s := "CRIU cannot " + e.Op + " it: " + e.Reason
	switch e.Op {
	case "check":
		s = "criu cannot run on this kernel: " + e.Reason
	case "install":
		s = "criu is not installed (Debian: apt-get install criu iptables)"
	}
	if e.Log != "" {
		s += " (CRIU's log: " + e.Log + ")"
	}
	return s
}

// CheckCRIU runs `criu check`, CRIU's test of the kernel features it needs,
// and returns CRIU's version line; a CRIU that cannot work on this kernel
// is a *CRIUError with its reason.
func CheckCRIU() (string, error) {
	path, err := exec.LookPath("criu")
	if err != nil {
		return "", &CRIUError{Op: "install"}
	}
	out, _ := exec.Command(path, "--version").Output()
	version := "CRIU " + strings.TrimPrefix(strings.TrimSpace(firstLine(out)), "Version: ")
	out, err = exec.Command(path, "check").CombinedOutput()
	if err != nil {
		reason := version + ": " + errorLines(out)
		if newKernel() {
			// Linux 6.13 split the vvar mapping, which CRIU before 4.1
			// cannot parse (CRIU PR #2539).
			reason += "; CRIU 4.1 or later is needed for Linux 6.13+"
		}
		return "", &CRIUError{Op: "check", Reason: reason}
	}
	return version, nil
}

// newKernel reports a kernel from 6.13 on.
func newKernel() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 6 || major == 6 && minor >= 13
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}

// errorLines picks CRIU's "Error" lines out of its output, without the
// source positions, joined; everything when there are none.
func errorLines(out []byte) string {
	var lines []string
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		l := s.Text()
		i := strings.Index(l, "Error (")
		if i < 0 {
			continue
		}
		l = l[i:]
		if j := strings.Index(l, "): "); j >= 0 {
			l = l[j+3:]
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	if len(lines) == 0 {
		return strings.TrimSpace(string(out))
	}
	return strings.Join(lines, "; ")
}

// CheckpointOptions say what a checkpoint saves.
type CheckpointOptions struct {
	// Dir receives CRIU's images; it must not exist.
	Dir string
	// TCP saves established TCP connections (CRIU's --tcp-established);
	// without it a checkpoint of a container with one fails.
	TCP bool
}

// bootIDKey is CRIU's name of the boot ID's mount at bootIDPath.
const (
	bootIDPath = "/proc/sys/kernel/random/boot_id"
	bootIDKey  = "nixcell-boot-id"
)

// criuConfigLabel names, in libcontainer's configuration, the CRIU
// configuration file libcontainer gives every CRIU call.
const criuConfigLabel = "org.criu.config"

// criuConfig is that file: in the host directory, which exists while the
// container runs and while it is restored.
func (c *Container) criuConfig() string { return filepath.Join(c.HostDir, "criu.conf") }

// stdioFile is one of the init's standard streams that is a file outside
// the container's mount namespace, by its descriptor and CRIU's key.
type stdioFile struct {
	FD  int    `json:"fd"`
	Key string `json:"key"` // file[MNT:INODE], as CRIU names an external file
}

// stdioName is the file beside CRIU's images that lists them.
const stdioName = "nixcell-stdio.json"

// Checkpoint saves the running container's processes in opts.Dir with
// CRIU and stops the container. On failure the container keeps running
// and the error is CRIU's (a *CRIUError).
func Checkpoint(stateRoot, name string, opts CheckpointOptions) error {
	lc, err := libcontainer.Load(stateRoot, name)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return lifecycle.ErrNotRunning
	}
	if err != nil {
		return fmt.Errorf("loading runtime state: %w", err)
	}
	cfg := lc.Config()
	for _, ns := range cfg.Namespaces {
		if ns.Type == configs.NEWNET && ns.Path != "" {
			return &CRIUError{Op: "checkpoint", Reason: "the container joined a network namespace it does not own; nixcell checkpoints only containers with a network of their own"}
		}
	}
	if !cfg.Namespaces.Contains(configs.NEWNET) {
		return &CRIUError{Op: "checkpoint", Reason: "the container shares the host's network (hostNetwork); nixcell checkpoints only containers with a network of their own"}
	}
	st, err := lc.State()
	if err != nil {
		return err
	}
	stdio, err := externalStdio(st.InitProcessPid)
	if err != nil {
		return err
	}
	var conf strings.Builder
	for _, f := range stdio {
		fmt.Fprintf(&conf, "external %s\n", f.Key)
	}
	// The boot ID (guestview_linux.go) is a host file libcontainer does
	// not know of: CRIU is told it is external, and binds it back.
	fmt.Fprintf(&conf, "ext-mount-map %s:%s\n", bootIDPath, bootIDKey)
	confPath := labelValue(cfg.Labels, criuConfigLabel)
	if confPath == "" {
		return errors.New("the container was started by a nixcell that did not prepare it for checkpoints; restart it first")
	}
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		return err
	}
	if err := os.Mkdir(opts.Dir, 0o700); err != nil {
		return err
	}
	data, _ := json.Marshal(stdio)
	if err := os.WriteFile(filepath.Join(opts.Dir, stdioName), data, 0o600); err != nil {
		return err
	}
	quietLibcontainer()
	work := opts.Dir + ".work"
	err = lc.Checkpoint(&libcontainer.CriuOpts{
		ImagesDirectory: opts.Dir, WorkDirectory: work,
		TcpEstablished: opts.TCP, FileLocks: true,
	})
	if err != nil {
		return criuFailure("checkpoint", work, "dump.log", err)
	}
	return Cleanup(Place{StateRoot: stateRoot, Name: name})
}

// quietLibcontainer stops libcontainer's log, which would repeat CRIU's
// log on stderr: the error says what CRIU said.
func quietLibcontainer() { logrus.SetOutput(io.Discard) }

// externalStdio lists the init's standard streams that are regular files
// of mounts its mount namespace lacks.
func externalStdio(pid int) ([]stdioFile, error) {
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	mounts := map[string]bool{}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if id, _, ok := strings.Cut(line, " "); ok {
			mounts[id] = true
		}
	}
	var files []stdioFile
	for fd := 0; fd <= 2; fd++ {
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue
		}
		var mnt string
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
				mnt = strings.TrimSpace(v)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || mounts[mnt] {
			continue
		}
		id, err := strconv.Atoi(mnt)
		if err != nil {
			continue
		}
		files = append(files, stdioFile{FD: fd, Key: fmt.Sprintf("file[%x:%x]", id, st.Ino)})
	}
	return files, nil
}

// reopenWithoutNoFollow gives the same open file without O_NOFOLLOW, for
// the init's standard streams: at a restore CRIU reopens them through
// /proc/PID/fd with the flags they had, and O_NOFOLLOW fails on that link.
func reopenWithoutNoFollow(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopening %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// RestoreFrom is a checkpoint to restore.
type RestoreFrom struct {
	// Dir holds CRIU's images (CheckpointOptions.Dir).
	Dir string
	// TCP restores established TCP connections; it must be as at the
	// checkpoint.
	TCP bool
}

// Restore brings the container's processes back from a checkpoint, as
// Start boots it: the same preparation of its root, host directory,
// mounts, cgroups and network, with CRIU restoring the init and its
// processes where libcontainer would start the init. On failure nothing
// of the restore remains and the error is CRIU's (a *CRIUError).
func (c *Container) Restore(from RestoreFrom) error {
	c.restore = &from
	s, err := c.create(nil)
	if err != nil {
		return err
	}
	s.notify.Close()
	return nil
}

// startInit starts the init, or restores it from a checkpoint.
func (c *Container) startInit(lc *libcontainer.Container, proc *libcontainer.Process) error {
	if c.restore == nil {
		return lc.Start(proc)
	}
	var stdio []stdioFile
	data, err := os.ReadFile(filepath.Join(c.restore.Dir, stdioName))
	if err != nil {
		return fmt.Errorf("reading the checkpoint: %w", err)
	}
	if err := json.Unmarshal(data, &stdio); err != nil {
		return fmt.Errorf("reading the checkpoint: %w", err)
	}
	// CRIU's own standard streams are proc's: the console log again.
	var conf strings.Builder
	seen := map[string]bool{}
	for _, f := range stdio {
		if (f.FD == 1 || f.FD == 2) && !seen[f.Key] {
			fmt.Fprintf(&conf, "inherit-fd fd[%d]:%s\n", f.FD, f.Key)
			seen[f.Key] = true
		}
	}
	fmt.Fprintf(&conf, "ext-mount-map %s:%s\n", bootIDKey, c.bootIDFile())
	// CRIU's newer mount engine copies the sharing of the host's mounts
	// (the store, the host's directories) with MOVE_MOUNT_SET_GROUP from
	// the mounts staged for them, which fails (EINVAL); the older one
	// binds them as they are.
	conf.WriteString("mntns-compat-mode\n")
	if err := os.WriteFile(c.criuConfig(), []byte(conf.String()), 0o600); err != nil {
		return err
	}
	if !c.Privileged() {
		if err := giveImages(c.restore.Dir, int(c.IDs.Start)); err != nil {
			return err
		}
	}
	quietLibcontainer()
	work := c.restore.Dir + ".restore"
	err = lc.Restore(proc, &libcontainer.CriuOpts{
		ImagesDirectory: c.restore.Dir, WorkDirectory: work,
		TcpEstablished: c.restore.TCP, FileLocks: true, EmptyNs: unix.CLONE_NEWNET,
	})
	if err != nil {
		return criuFailure("restore", work, "restore.log", err)
	}
	return nil
}

// giveImages makes CRIU's images readable by the container's root: CRIU
// reads some of them after it has entered the container's user namespace,
// where the host's root has no power over the host's files. They are the
// container's own memory; their directory is the host's, which no
// container reaches.
func giveImages(dir string, uid int) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Fchownat(int(d.Fd()), n, uid, uid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("giving the checkpoint to the container's root: %w", err)
		}
	}
	// CRIU 3.17 opens the time namespace's image (the clocks' offsets,
	// nothing secret) from the restored root task at a moment when its
	// user namespace may not have its ID maps yet, so that it is nobody
	// there and owners' rights do not apply: it fails "Unable to open
	// timens-0.img: Permission denied" now and then. Others may read
	// that one image, and search the directory (every other image stays
	// 0600).
	if err := unix.Fchmodat(int(d.Fd()), timensImage, 0o644, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("giving the checkpoint to the container's root: %w", err)
	}
	if err := d.Chmod(0o711); err != nil {
		return err
	}
	return d.Chown(uid, uid)
}

// timensImage is CRIU's image of the time namespace's clock offsets.
const timensImage = "timens-0.img"

// hooks run BeforeInit: for a restored container once CRIU has made its
// namespaces (it waits for it), for a started one beside the init's setup
// (see attachment).
func (c *Container) hooks() configs.Hooks {
	switch {
	case c.BeforeInit == nil:
		return nil
	case c.restore != nil:
		return configs.Hooks{configs.CreateRuntime: {configs.NewFunctionHook(func(s *specs.State) error {
			return c.BeforeInit(s.Pid)
		})}}
	case c.attach != nil:
		return c.attach.hooks()
	}
	return nil
}

// criuFailure is the error of a failed CRIU call, with the error lines of
// its log, which is kept beside the images.
func criuFailure(op, dir, log string, err error) error {
	path := filepath.Join(dir, log)
	data, rerr := os.ReadFile(path)
	if rerr != nil {
		return &CRIUError{Op: op, Reason: err.Error()}
	}
	return &CRIUError{Op: op, Reason: errorLines(data), Log: path}
}
